"""The window sink: ``cv2.imshow`` on the main thread, with keyboard controls.

Keys: q or Esc quits, space pauses, m toggles the mask, h the HUD, s saves a snapshot PNG.

OpenCV's Qt backend aborts the whole process when it cannot reach a display, so
:func:`display_problem` checks first, without touching Qt in this process: ``$DISPLAY`` must be
set, its X server must accept a connection, and a throw-away child process must be able to open
a window. Only then does the first ``imshow`` happen here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from stream.frame import Frame, SourceInfo

PROBE = "import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); cv2.destroyAllWindows()"
KEY_QUIT = {ord("q"), ord("Q"), 27}  # 27: Esc
MAX_START_WH = (1280, 800)  # a bigger frame opens scaled down (the window stays resizable)


def _x_socket_ok(display: str, timeout: float = 1.0) -> bool:
    """Whether the X server named by ``display`` ("[host]:N[.s]") accepts a connection."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    try:
        if host in ("", "unix"):
            path = f"/tmp/.X11-unix/X{number}"
            for address in (path, "\0" + path):  # the file, then Linux's abstract namespace
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(timeout)
                    try:
                        sock.connect(address)
                        return True
                    except OSError:
                        continue
            return False
        with socket.create_connection((host, 6000 + int(number)), timeout=timeout):
            return True
    except OSError:
        return False


def display_problem(*, probe: bool = True) -> str | None:
    """Why no window can be shown here, or None when one can.

    Args:
        probe: also open a window in a child process (catches X authorisation problems).
    """
    build = cv2.getBuildInformation()
    gui = next((line.split(":", 1)[1].strip() for line in build.splitlines()
                if line.strip().startswith("GUI:")), "")
    if gui.upper() in ("", "NONE"):
        return "this OpenCV build has no GUI support (opencv-python-headless?)"
    if sys.platform.startswith("linux"):
        display = os.environ.get("DISPLAY", "")
        if not display:
            return "DISPLAY is not set"
        if not _x_socket_ok(display):
            return f"cannot connect to the X server at DISPLAY={display}"
    if probe:
        try:
            done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            return "opening a test window timed out"
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            return f"a test window could not open ({lines[-1] if lines else done.returncode})"
    return None


class Controls(Protocol):
    """What the window may do to the run it shows (the pipeline hands it out)."""

    @property
    def paused(self) -> bool:
        """Whether processing is paused."""
        ...

    def stop(self) -> None:
        """Finish the frame in hand, write and close the outputs."""
        ...

    def toggle_pause(self) -> bool:
        """Pause or resume; True when now paused."""
        ...

    def toggle_mask(self) -> None:
        """Show or hide the mask overlay in the rendered frames."""
        ...

    def toggle_hud(self) -> None:
        """Show or hide the HUD in the rendered frames."""
        ...

    def redraw(self, frame: Frame) -> np.ndarray:
        """``frame`` drawn with the overlay settings now in force (H×W×3 uint8 BGR)."""
        ...


class WindowSink:
    """Shows rendered frames and turns keys into :class:`Controls` calls.

    Args:
        title: window title.
        snapshot_dir: where s saves ``snapshot_<index>.png``.
        wait_ms: ``cv2.waitKey`` delay per poll.
    """

    name = "window"

    def __init__(self, *, title: str = "SLSNet live", snapshot_dir: str | Path = ".",
                 wait_ms: int = 1) -> None:
        self.title = title
        self.snapshot_dir = Path(snapshot_dir)
        self.wait_ms = wait_ms
        self.shown = 0
        self.snapshots: list[Path] = []
        self._last: Frame | None = None
        self._image = None
        self._open = False
        self._mapped = False

    def open(self, info: SourceInfo) -> None:
        """Create the window, sized to fit ``info.size_wh`` on a laptop screen."""
        # GUI_NORMAL: no Qt toolbar or status bar, so the frame gets the whole window
        flags = cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL
        cv2.namedWindow(self.title, flags)
        width, height = info.size_wh
        scale = min(1.0, MAX_START_WH[0] / width, MAX_START_WH[1] / height)
        cv2.resizeWindow(self.title, max(1, round(width * scale)), max(1, round(height * scale)))
        self._open = True

    def show(self, frame: Frame) -> None:
        """Display ``frame.rendered`` (the plain image if it was not rendered)."""
        self._last = frame
        self._display(frame.rendered if frame.rendered is not None else frame.image)

    def _display(self, image) -> None:
        self._image = image
        cv2.imshow(self.title, image)
        self.shown += 1

    def poll(self, controls: Controls) -> None:
        """Handle pending keys and window closing."""
        key = cv2.waitKey(self.wait_ms)
        if key != -1:
            self.handle_key(key & 0xFF, controls)
        # the window maps asynchronously: it counts as closed only once it has been seen open
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1:
            self._mapped = True
        elif self._mapped:
            controls.stop()  # the user closed the window

    def handle_key(self, key: int, controls: Controls) -> None:
        """Act on one key code (see the module docstring)."""
        if key in KEY_QUIT:
            controls.stop()
        elif key == ord(" "):
            controls.toggle_pause()
        elif key in (ord("m"), ord("M")):
            controls.toggle_mask()
            self._redraw(controls)
        elif key in (ord("h"), ord("H")):
            controls.toggle_hud()
            self._redraw(controls)
        elif key in (ord("s"), ord("S")):
            try:
                self.save_snapshot()
            except OSError as exc:  # a snapshot is a convenience: say so, keep streaming
                print(f"warning: {exc}", file=sys.stderr)

    def _redraw(self, controls: Controls) -> None:
        # while paused no new frame comes: show the toggle's effect on the frame on screen
        if controls.paused and self._last is not None:
            self._display(controls.redraw(self._last))

    def save_snapshot(self) -> Path | None:
        """Write the picture on screen as PNG; returns its path (None before the first frame)."""
        if self._image is None:
            return None
        index = self._last.index if self._last is not None else self.shown
        path = self.snapshot_dir / f"snapshot_{index:06d}_{time.strftime('%H%M%S')}.png"
        if not cv2.imwrite(str(path), self._image):
            raise OSError(f"cannot write snapshot {path}")
        print(f"snapshot saved: {path}", file=sys.stderr)
        self.snapshots.append(path)
        return path

    def close(self) -> None:
        """Destroy the window (idempotent)."""
        if self._open:
            self._open = False
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
