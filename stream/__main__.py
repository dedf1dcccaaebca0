"""``python -m stream``: the live demo (same flags as ``demo.py``; see ``--help``)."""

import sys

from stream import interrupts

interrupts.watch()  # before torch: a Ctrl-C while it imports is not lost
try:
    from stream.cli import main
except KeyboardInterrupt:  # Ctrl-C during the seconds that importing torch takes
    print("interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main(prog="python -m stream"))
