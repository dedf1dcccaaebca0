"""``python -m stream.bench``: see :mod:`stream.bench.speed`."""

from stream.bench.speed import main

if __name__ == "__main__":
    raise SystemExit(main())
