"""A video file decoded by PyAV in its own thread, with each frame's PTS and the time base.

Every pixel format FFmpeg decodes (gray, rgba, 10-bit yuv, odd sizes) is converted to BGR uint8
H×W×3, and display-rotation metadata (phone recordings) is applied, so downstream stages see the
picture as a player would show it. Corrupt packets are skipped and counted as unreadable;
decoding goes on with the next packet. The file is opened and its first frame decoded before
``open`` returns, so a file that is missing, empty, truncated or has no video stream fails early
with one clear :class:`~stream.errors.SourceError` line.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stream.errors import SourceError
from stream.frame import Frame, SourceInfo
from stream.sources.base import Source

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample.mp4"  # the bundled clip

MAX_ERRORS_IN_A_ROW = 100  # read or decode failures without one good frame: give up


class FileSource(Source):
    """Decode ``path`` with PyAV; ``lossless`` queue, or ``latest`` and paced when ``realtime``."""

    def __init__(self, path: str | Path, *, realtime: bool = False, queue_size: int = 8) -> None:
        self.path = Path(path)
        self.realtime = realtime
        _check_readable(self.path)
        self._container = _open_container(self.path)
        try:
            stream = _video_stream(self._container, self.path)
            stream.thread_type = "AUTO"  # frame + slice threads; files are not latency-bound
            self._stream = stream
            self._time_base = Fraction(stream.time_base or Fraction(1, 90000))
            fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0)
            self._fps = fps if fps > 0 else 30.0
            self._step = max(1, round(1 / (self._fps * self._time_base)))
            self._last_pts: int | None = None
            self._errors_in_row = 0
            self._read_to = 0  # bytes of the file the demuxer got through
            self._frames = self._decode()
            t0 = time.perf_counter()
            first = next(self._frames, None)
            self._first_ms = (time.perf_counter() - t0) * 1e3
        except BaseException:
            self._container.close()
            raise
        if first is None:
            self._container.close()
            raise SourceError(f"{self.path}: no video frame could be decoded")
        self._first = first
        image = first[0]
        info = SourceInfo(
            name=f"file:{self.path.name}",
            size_wh=(image.shape[1], image.shape[0]),
            fps=self._fps,
            time_base=self._time_base,
            frame_count=stream.frames or None,
            live=False,
            path=str(self.path),
        )
        super().__init__(info, "latest" if realtime else "lossless", queue_size)
        if (image.shape[1], image.shape[0]) != (stream.width, stream.height):
            self.warnings.append(
                f"{self.path.name}: rotated to {image.shape[1]}×{image.shape[0]} "
                "as its display-rotation metadata asks"
            )

    def _run(self, stop: threading.Event) -> None:
        t_start, pts0 = time.perf_counter(), None
        index = 0
        while not stop.is_set():
            if self._first is not None:
                (image, pts), decode_ms, self._first = self._first, self._first_ms, None
            else:
                t0 = time.perf_counter()
                item = next(self._frames, None)
                if item is None:
                    return
                (image, pts), decode_ms = item, (time.perf_counter() - t0) * 1e3
            if self.realtime:
                pts0 = pts if pts0 is None else pts0
                due = t_start + float((pts - pts0) * self._time_base)
                if stop.wait(max(0.0, due - time.perf_counter())):
                    return
            frame = Frame(
                image=image,
                index=index,
                pts=pts,
                time_base=self._time_base,
                capture_time=time.perf_counter(),
                timings={"decode": decode_ms},
            )
            self.queue.put(frame, stop)
            index += 1

    def _decode(self) -> Iterator[tuple[np.ndarray, int]]:
        """Yield (BGR image, pts) per frame; skip and count what cannot be read."""
        while True:
            try:
                for packet in self._container.demux(self._stream):
                    try:
                        decoded = packet.decode()
                    except av.FFmpegError:
                        self._skip("undecodable packets")
                        continue
                    if packet.pos is not None and packet.pos >= 0:
                        self._read_to = max(self._read_to, packet.pos + packet.size)
                    for vf in decoded:
                        self._errors_in_row = 0
                        self._decoded += 1
                        yield _to_bgr(vf), self._pts(vf)
                self._account_for_missing()
                return
            except av.InvalidDataError:
                # a damaged container chunk: count it and read on from where the demuxer is
                self._skip("read errors")
            except av.FFmpegError as exc:
                raise SourceError(f"{self.path}: reading failed: {_reason(exc)}") from None

    def _account_for_missing(self) -> None:
        """At the end: count frames the file promised but never gave, or say where it stopped."""
        if not hasattr(self, "info"):
            return  # not a single frame while opening: __init__ raises SourceError
        expected = self.info.frame_count
        if expected:
            self._unreadable = max(self._unreadable, expected - self._decoded)
            return
        size = self.path.stat().st_size
        if self._read_to and size - self._read_to > max(0.1 * size, 1024):
            note = (
                f"{self.path.name}: reading stopped at {100 * self._read_to / size:.0f}% of the "
                f"file (byte {self._read_to} of {size}); the rest is damaged or unreadable"
            )
            self.warnings.append(note)
            self.status = note

    def _skip(self, what: str) -> None:
        """Count one unreadable packet; give up after too many in a row."""
        self._unreadable += 1
        self._errors_in_row += 1
        if self._errors_in_row > MAX_ERRORS_IN_A_ROW:
            raise SourceError(f"{self.path}: gave up after {self._errors_in_row} {what} in a row")

    def _pts(self, vf: av.VideoFrame) -> int:
        """The frame's PTS; extrapolated from the previous one when the file has none."""
        pts = vf.pts
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        self._last_pts = pts
        return pts

    def _release(self) -> None:
        self._container.close()


def _to_bgr(vf: av.VideoFrame) -> np.ndarray:
    """Any decoded picture → H×W×3 uint8 BGR, display rotation applied."""
    image = vf.to_ndarray(format="bgr24")
    quarter_turns = round((vf.rotation or 0) / 90) % 4  # counter-clockwise degrees
    if quarter_turns:
        image = np.rot90(image, quarter_turns)
    return np.ascontiguousarray(image)  # odd widths come back with padded rows


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"video file not found: {path}")
    if path.is_dir():
        raise SourceError(f"{path} is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise SourceError(f"cannot read {path}: permission denied")
    if path.stat().st_size == 0:
        raise SourceError(f"{path} is empty (0 bytes)")


def _open_container(path: Path):
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        if _mp4_without_index(path):
            raise SourceError(
                f"{path} is a truncated MP4: its index ('moov' box) is missing, so it cannot be "
                "played (was the recording cut short?)"
            ) from None
        raise SourceError(f"{path} is not a video file FFmpeg can read ({_reason(exc)})") from None


def _video_stream(container, path: Path):
    if container.streams.video:
        return container.streams.video[0]
    found = [
        f"{s.type} {s.codec_context.name if s.codec_context else '?'}" for s in container.streams
    ]
    held = ", ".join(found) if found else "no streams"
    raise SourceError(f"{path} has no video stream (it holds: {held})")


def _mp4_without_index(path: Path, max_boxes: int = 4096) -> bool:
    """True when the top-level boxes look like MP4 ('ftyp' first) but no 'moov' box exists."""
    size_total = path.stat().st_size
    kinds: list[bytes] = []
    with path.open("rb") as f:
        offset = 0
        while offset + 8 <= size_total and len(kinds) < max_boxes:
            f.seek(offset)
            header = f.read(16)
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if size == 1 and len(header) == 16:
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:
                size = size_total - offset
            if size < 8:
                break
            kinds.append(kind)
            offset += size
    return bool(kinds) and kinds[0] == b"ftyp" and b"moov" not in kinds


def _reason(exc: av.FFmpegError) -> str:
    return getattr(exc, "strerror", None) or str(exc)
