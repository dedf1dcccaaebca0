"""``python -m stream``: the live demo (same flags as ``demo.py``; see ``--help``)."""

import sys

from stream.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m stream"))
