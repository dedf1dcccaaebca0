"""``python -m stream.temporal_bench``: see :mod:`stream.bench.temporal`."""

import sys

from stream.bench.temporal import main

if __name__ == "__main__":
    sys.exit(main())
