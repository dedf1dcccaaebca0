"""A video file decoded by PyAV in its own thread, with each frame's PTS and the time base.

Every pixel format FFmpeg decodes (gray, rgba, 10-bit yuv, odd sizes) is converted to BGR uint8
H×W×3, and the display matrix (rotation, and the mirror some phones and scopes add) is applied,
so downstream stages see the picture as a player would show it. The video is the longest real
video stream (never an attached cover picture; ``video_stream`` picks another), and the source
says which it took when there was a choice. Corrupt packets are skipped and counted as
unreadable, with the times where they were; decoding goes on with the next packet. Packets that
hold no picture by design (an AVI's empty dropped-frame chunk, frames an MP4 edit list trims)
are not counted as damage. The file is opened and its first frame decoded before ``open``
returns, so a file that is missing, empty, truncated or has no video stream fails early with
one clear :class:`~stream.errors.SourceError` line.
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
from stream.sources.orientation import Orientation, display_matrix, orientation

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample.mp4"  # the bundled clip

MAX_ERRORS_IN_A_ROW = 100  # read or decode failures without one good frame: give up


class FileSource(Source):
    """Decode ``path`` with PyAV; ``lossless`` queue, or ``latest`` and paced when ``realtime``."""

    def __init__(
        self,
        path: str | Path,
        *,
        realtime: bool = False,
        queue_size: int = 8,
        video_stream: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.realtime = realtime
        _check_readable(self.path)
        self._container = _open_container(self.path)
        try:
            stream, choice = _video_stream(self._container, self.path, video_stream)
            stream.thread_type = "AUTO"  # frame + slice threads; files are not latency-bound
            self._stream = stream
            self._time_base = Fraction(stream.time_base or Fraction(1, 90000))
            fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0)
            self._fps = fps if fps > 0 else 30.0
            self._step = max(1, round(1 / (self._fps * self._time_base)))
            self._last_pts: int | None = None
            self._errors_in_row = 0
            self._read_to = 0  # bytes of the file the demuxer got through
            self._no_picture = 0  # packets that hold no picture by design (empty, trimmed)
            self._damage_s: list[float] = []  # where unreadable packets were (seconds)
            self._orientation: Orientation | None = None  # from the first frame's matrix
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
        if choice:
            self.warnings.append(choice)
        turned = self._orientation
        if turned is not None and not turned.identity:
            self.warnings.append(
                f"{self.path.name}: {turned.describe()} to {image.shape[1]}×{image.shape[0]} "
                "as its display matrix asks"
            )
        if turned is not None and turned.unapplied is not None:
            self.warnings.append(
                f"{self.path.name}: its display matrix asks for a {turned.unapplied:.0f}° turn, "
                "which is not a quarter turn; frames are processed as decoded"
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
            self._put(frame, stop)
            index += 1

    def _decode(self) -> Iterator[tuple[np.ndarray, int]]:
        """Yield (BGR image, pts) per frame; skip and count what cannot be read."""
        video = self._stream.index
        while True:
            try:
                # every stream is demuxed, so that audio after the last video packet counts as
                # read; only the video goes to the decoder
                for packet in self._container.demux():
                    if packet.pos is not None and packet.pos >= 0:
                        self._read_to = max(self._read_to, packet.pos + packet.size)
                    if packet.stream.index != video:  # (flush packets' stream_index is 0)
                        continue
                    if packet.size == 0 and packet.dts is not None:
                        # an empty chunk (AVI's dropped frame): no picture, and sending it would
                        # drain the decoder
                        self._no_picture += 1
                        continue
                    if packet.is_discard:
                        self._no_picture += 1  # decoded as a reference, trimmed by an edit list
                    try:
                        decoded = packet.decode()
                    except av.FFmpegError:
                        self._skip("undecodable packets", packet)
                        continue
                    for vf in decoded:
                        self._errors_in_row = 0
                        self._decoded += 1
                        yield self._to_bgr(vf), self._pts(vf)
                self._account_for_missing()
                return
            except av.InvalidDataError:
                # a damaged container chunk: count it and read on from where the demuxer is
                self._skip("read errors")
            except av.FFmpegError as exc:
                raise SourceError(f"{self.path}: reading failed: {_reason(exc)}") from None

    def _to_bgr(self, vf: av.VideoFrame) -> np.ndarray:
        """Any decoded picture → H×W×3 uint8 BGR, turned and mirrored as players show it."""
        image = vf.to_ndarray(format="bgr24")
        if self._orientation is None:  # one matrix per stream: read it from the first frame
            self._orientation = orientation(display_matrix(vf))
        return np.ascontiguousarray(self._orientation(image))  # odd widths have padded rows

    def damage_note(self) -> str | None:
        """'3 unreadable frame(s) skipped (damaged data near 1.20 s, 2.40 s)', or None."""
        if not self._unreadable:
            return None
        where = sorted({round(t, 2) for t in self._damage_s})
        spots = ", ".join(f"{t:.2f} s" for t in where[:5]) + (" …" if len(where) > 5 else "")
        missing = self._unreadable - len(self._damage_s)
        places = []
        if spots:
            places.append(f"near {spots}")
        if missing > 0:
            last = 0.0 if self._last_pts is None else float(self._last_pts * self._time_base)
            places.append(f"{missing} missing after the last readable frame at {last:.2f} s")
        return (
            f"{self.info.name}: {self._unreadable} unreadable frame(s) skipped (damaged data "
            f"{'; '.join(places)}); every readable frame was processed"
        )

    def _account_for_missing(self) -> None:
        """At the end: count frames the file promised but never gave, or say where it stopped."""
        if not hasattr(self, "info"):
            return  # not a single frame while opening: __init__ raises SourceError
        expected = self.info.frame_count
        if expected:
            # an AVI counts its empty dropped-frame chunks as frames; its index leaves them out
            entries = len(self._stream.index_entries or ())
            promised = (min(expected, entries) if entries else expected) - self._no_picture
            self._unreadable = max(self._unreadable, promised - self._decoded)
            return
        size = self.path.stat().st_size
        if self._read_to and size - self._read_to > max(0.1 * size, 1024):
            note = (
                f"{self.path.name}: reading stopped at {100 * self._read_to / size:.0f}% of the "
                f"file (byte {self._read_to} of {size}); the rest is damaged or unreadable"
            )
            self.warnings.append(note)
            self.status = note

    def _skip(self, what: str, packet: av.Packet | None = None) -> None:
        """Count one unreadable packet and where it was; give up after too many in a row."""
        self._unreadable += 1
        if packet is not None and packet.pts is not None:
            self._damage_s.append(float(packet.pts * self._time_base))
        elif self._last_pts is not None:
            self._damage_s.append(float(self._last_pts * self._time_base))
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


def _video_stream(container, path: Path, index: int | None):
    """The video stream to process and a note on the choice (None when there was none).

    By default the longest real video stream: attached pictures (an MP3's or M4A's cover art)
    never, and a one-frame thumbnail stream loses to the recording beside it.
    """
    videos = list(container.streams.video)
    real = [s for s in videos if not _attached_picture(s)]
    if index is not None:
        chosen = next((s for s in videos if s.index == index), None)
        if chosen is None or _attached_picture(chosen):
            choices = ", ".join(_describe(s) for s in real) or "none"
            raise SourceError(
                f"{path}: stream {index} is not a video stream to process (video streams: "
                f"{choices})"
            )
        return chosen, None
    if not real:
        held = ", ".join(_describe(s) for s in container.streams) or "no streams"
        raise SourceError(f"{path} has no video stream (it holds: {held})")
    if len(real) == 1:
        return real[0], None
    lengths = _lengths(path, real)
    chosen = max(real, key=lambda s: (lengths[s.index], -s.index))
    others = ", ".join(_describe(s) for s in real if s is not chosen)
    return chosen, (
        f"{path.name}: {len(real)} video streams; processing the longest, {_describe(chosen)} "
        f"(not {others}); --video-stream N picks another"
    )


def _attached_picture(stream) -> bool:
    return bool(int(stream.disposition) & int(av.stream.Disposition.attached_pic))


def _describe(stream) -> str:
    """'#1 h264 640×480', 'attached picture mjpeg', 'audio mp3', for notes and errors."""
    codec = _codec_name(stream)
    if stream.type != "video":
        return f"{stream.type} {codec}"
    if _attached_picture(stream):
        return f"attached picture {codec}"
    return f"#{stream.index} {codec} {stream.width}×{stream.height}"


def _codec_name(stream) -> str:
    """The format's name ('mp3'), not the decoder's ('mp3float')."""
    ctx = stream.codec_context
    if ctx is None:
        return "?"
    return getattr(ctx.codec, "canonical_name", None) or ctx.name


def _lengths(path: Path, streams, max_packets: int = 500) -> dict[int, float]:
    """Each stream's length in seconds as the file states it, else its packets near the start.

    Matroska, WebM and MPEG-TS often state no per-stream length; there, counting the packets of
    the first ``max_packets`` (in a second reader, so the main one still starts at the start)
    tells a one-frame thumbnail from a recording.
    """
    lengths = {}
    for s in streams:
        seconds = float(s.duration * s.time_base) if s.duration and s.time_base else 0.0
        if not seconds and s.frames and s.average_rate:
            seconds = s.frames / float(s.average_rate)
        lengths[s.index] = seconds
    if all(lengths.values()):
        return lengths
    counts = dict.fromkeys(lengths, 0.0)
    try:
        with av.open(str(path), metadata_errors="ignore") as probe:
            wanted = [probe.streams[i] for i in counts]
            for n, packet in enumerate(probe.demux(*wanted)):
                if n >= max_packets:
                    break
                if packet.size:
                    counts[packet.stream_index] += 1
    except av.FFmpegError:
        pass
    return counts


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
