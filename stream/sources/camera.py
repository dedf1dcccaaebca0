"""A camera read by OpenCV (V4L2 on Linux) in its own thread; the newest frame wins.

Opening tries the V4L2 backend first and then OpenCV's default, and reads one frame to prove
the camera delivers; if nothing works the :class:`~stream.errors.SourceError` lists every try
and the video devices present. A camera that stops delivering (unplugged, driver hiccup) is
reopened with exponential backoff; ``source.status`` says so while it lasts (for the overlay)
and the first frames after a reconnect carry ``notes["source"]``. After ``max_reconnects``
failed tries the thread gives up with a clear ``SourceError`` in ``source.error``.

Camera frames have no PTS (``pts=None``); sinks derive timestamps from ``capture_time``.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
import time
from fractions import Fraction

import cv2
import numpy as np

from stream.errors import SourceError
from stream.frame import Frame, SourceInfo
from stream.sources.base import Source

CAMERA_TIME_BASE = Fraction(1, 1000)  # for sinks that turn capture times into PTS
NOTE_SECONDS = 2.0  # how long frames after a reconnect keep saying so


class CameraSource(Source):
    """Capture from ``device`` (index, /dev/video* path, or any path OpenCV's FFmpeg reads).

    Args:
        device: camera index or path.
        width: requested capture width (the camera may choose another; see ``warnings``).
        height: requested capture height.
        fps: requested capture rate.
        mjpg: request the MJPG pixel format.
        queue_size: bound of the ``latest`` queue.
        max_reconnects: reopen tries after the camera stops delivering, then give up.
        backoff_s: first wait before reopening; doubles each try up to ``max_backoff_s``.
        max_backoff_s: longest wait between tries.
    """

    def __init__(
        self,
        device: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        mjpg: bool = False,
        queue_size: int = 8,
        max_reconnects: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ) -> None:
        self.device = device
        self.requested = {"width": width, "height": height, "fps": fps, "mjpg": mjpg}
        self.max_reconnects = max_reconnects
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._cap, image, tried = self._open()
        if self._cap is None:
            raise SourceError(
                f"cannot open camera {device}: tried {'; '.join(tried)}. {_devices_present()}"
            )
        self._first: np.ndarray | None = image
        cap_fps = self._cap.get(cv2.CAP_PROP_FPS)
        nominal = cap_fps if 0 < cap_fps < 1000 else (fps or 30.0)
        info = SourceInfo(
            name=f"camera:{device}",
            size_wh=(image.shape[1], image.shape[0]),
            fps=float(nominal),
            time_base=CAMERA_TIME_BASE,
            frame_count=None,
            live=True,
            path=None,
        )
        super().__init__(info, "latest", queue_size)
        self.warnings.extend(self._settings_ignored(info))

    def _backends(self) -> list[tuple[int, str]]:
        local_device = isinstance(self.device, int) or str(self.device).startswith("/dev/")
        if sys.platform.startswith("linux") and local_device:
            return [(cv2.CAP_V4L2, "V4L2"), (cv2.CAP_ANY, "OpenCV default backend")]
        if local_device:
            return [(cv2.CAP_ANY, "OpenCV default backend")]
        return [(cv2.CAP_FFMPEG, "FFmpeg"), (cv2.CAP_ANY, "OpenCV default backend")]

    def _open(self) -> tuple[cv2.VideoCapture | None, np.ndarray | None, list[str]]:
        """Try each backend; return (capture, first BGR frame, what was tried)."""
        tried = []
        node = _device_node(self.device)
        with _quiet_opencv():
            for api, label in self._backends():
                if api == cv2.CAP_ANY and node is not None and not os.path.exists(node):
                    tried.append(f"{label}: skipped, {node} does not exist")
                    continue
                cap = cv2.VideoCapture(self.device, api)
                if not cap.isOpened():
                    tried.append(f"{label}: could not open")
                    cap.release()
                    continue
                self._configure(cap)
                t0 = time.perf_counter()
                ok, image = cap.read()
                # this probe frame is delivered first, with the time it was really captured
                self._first_at, self._first_ms = (
                    time.perf_counter(),
                    (time.perf_counter() - t0) * 1e3,
                )
                if not ok or image is None:
                    tried.append(f"{label}: opened but delivered no frame")
                    cap.release()
                    continue
                return cap, _to_bgr(image), tried
        return None, None, tried

    def _configure(self, cap: cv2.VideoCapture) -> None:
        req = self.requested
        if req["mjpg"]:  # the pixel format must be set before the size on V4L2
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if req["width"]:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, req["width"])
        if req["height"]:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, req["height"])
        if req["fps"]:
            cap.set(cv2.CAP_PROP_FPS, req["fps"])
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # a live view wants the newest frame, not a backlog

    def _settings_ignored(self, info: SourceInfo) -> list[str]:
        req, notes = self.requested, []
        w, h = info.size_wh
        if (req["width"] and req["width"] != w) or (req["height"] and req["height"] != h):
            notes.append(
                f"camera {self.device} delivers {w}×{h}, not the requested "
                f"{req['width'] or w}×{req['height'] or h}"
            )
        if req["fps"] and abs(req["fps"] - info.fps) > 0.5:
            notes.append(f"camera {self.device} runs at {info.fps:g} fps, not {req['fps']:g}")
        if req["mjpg"]:
            fourcc = int(self._cap.get(cv2.CAP_PROP_FOURCC))
            code = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4))
            if code != "MJPG":
                notes.append(f"camera {self.device} ignored MJPG and uses {code.strip() or '?'}")
        return notes

    def _run(self, stop: threading.Event) -> None:
        index, note, note_until = 0, None, 0.0
        while not stop.is_set():
            t0 = time.perf_counter()
            if self._first is not None:
                image, self._first = self._first, None
                now, read_ms = self._first_at, self._first_ms
            else:
                ok, raw = self._cap.read()
                if not ok or raw is None:
                    attempts = self._reconnect(stop)
                    if attempts is None:
                        return  # stopped while waiting
                    note = f"camera reconnected after {attempts} attempt(s)"
                    note_until = time.perf_counter() + NOTE_SECONDS
                    continue
                image = _to_bgr(raw)
                now = time.perf_counter()
                read_ms = (now - t0) * 1e3
            self._decoded += 1
            frame = Frame(
                image=image,
                index=index,
                pts=None,
                time_base=CAMERA_TIME_BASE,
                capture_time=now,
                timings={"capture": read_ms},
            )
            if note is not None and now < note_until:
                frame.notes["source"] = note
            self._put(frame, stop)
            index += 1

    def _reconnect(self, stop: threading.Event) -> int | None:
        """Reopen with backoff; the number of attempts it took, None if stopped.

        Raises:
            SourceError: every attempt failed.
        """
        self._cap.release()
        started = time.perf_counter()
        delay = self.backoff_s
        for attempt in range(1, self.max_reconnects + 1):
            self.status = f"camera lost, reconnecting (attempt {attempt}/{self.max_reconnects})"
            if stop.wait(delay):
                return None
            cap, image, _ = self._open()
            if cap is not None:
                self._cap, self._first = cap, image
                self._reconnects += 1
                self.status = None
                return attempt
            delay = min(delay * 2, self.max_backoff_s)
        self.status = "camera lost"
        raise SourceError(
            f"camera {self.device} stopped delivering frames; gave up after "
            f"{self.max_reconnects} reconnect attempts over {time.perf_counter() - started:.1f} s"
        )

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()


def _to_bgr(image: np.ndarray) -> np.ndarray:
    """Whatever the driver delivers (grey, BGRA, 16-bit) → H×W×3 uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _device_node(device: int | str) -> str | None:
    """The V4L2 node a camera spec refers to on Linux (None elsewhere or for other paths)."""
    if not sys.platform.startswith("linux"):
        return None
    if isinstance(device, int):
        return f"/dev/video{device}"
    return device if device.startswith("/dev/") else None


def _devices_present() -> str:
    devices = sorted(glob.glob("/dev/video*"))
    if not devices:
        return "No /dev/video* devices found." if sys.platform.startswith("linux") else ""
    return f"Video devices present: {', '.join(devices)}."


class _quiet_opencv:  # noqa: N801 - used as a context manager, reads like one
    """Silence OpenCV's own warnings while probing; our error lists what went wrong."""

    def __enter__(self) -> None:
        self._level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

    def __exit__(self, *exc) -> None:
        cv2.utils.logging.setLogLevel(self._level)
