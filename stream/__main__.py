"""``python -m stream``: the live demo (same flags as ``demo.py``; see ``--help``)."""

import gc
import sys

from stream import interrupts

interrupts.watch()  # before torch: a Ctrl-C while it imports is not lost
try:
    from stream.cli import main
except KeyboardInterrupt:  # Ctrl-C during the seconds that importing torch takes
    print("interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    status = main(prog="python -m stream")
    # Everything is closed by now. Skip the interpreter's last garbage collection over torch's and
    # Gradio's object graphs: it took seconds (12 s under load) after a web server's Ctrl-C.
    gc.freeze()
    sys.exit(status)
