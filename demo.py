#!/usr/bin/env python3
"""SLSNet live demo: camera or video file in; masked video, masks and measurements out.

Examples::

    python demo.py                                   # the bundled sample clip, in a window
    python demo.py --camera 0                        # live from the first camera
    python demo.py --video clip.mp4 --output out.mp4 --mask-dir masks/ --csv lesion.csv
    python demo.py --no-display --max-frames 100     # headless speed check

All flags: ``python demo.py --help``. The parser and the wiring live in :mod:`stream.cli`.
"""

from stream import interrupts

interrupts.watch()  # before torch: a Ctrl-C while it imports is not lost
try:
    from stream.cli import main
except KeyboardInterrupt:  # Ctrl-C during the seconds that importing torch takes
    interrupts.leave(130, "interrupted")

if __name__ == "__main__":
    interrupts.leave(main(prog="demo.py"))
