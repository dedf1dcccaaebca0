"""``python -m stream.synth``: see :mod:`stream.bench.synth`."""

import sys

from stream.bench.synth import main

if __name__ == "__main__":
    sys.exit(main())
