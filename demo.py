#!/usr/bin/env python3
"""SLSNet live demo: camera or video file in; masked video, masks and measurements out.

Examples::

    python demo.py                                   # the bundled sample clip, in a window
    python demo.py --camera 0                        # live from the first camera
    python demo.py --video clip.mp4 --output out.mp4 --mask-dir masks/ --csv lesion.csv
    python demo.py --no-display --max-frames 100     # headless speed check

All flags: ``python demo.py --help``. The parser and the wiring live in :mod:`stream.cli`.
"""

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
    status = main(prog="demo.py")
    # Everything is closed by now. Skip the interpreter's last garbage collection over torch's and
    # Gradio's object graphs: it took seconds (12 s under load) after a web server's Ctrl-C.
    gc.freeze()
    sys.exit(status)
