"""``python -m stream.temporal_speed``: see :mod:`stream.bench.temporal_speed`."""

import sys

from stream.bench.temporal_speed import main

if __name__ == "__main__":
    sys.exit(main())
