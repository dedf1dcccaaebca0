"""Real test clips, written with PyAV at test time, and helpers to read outputs back.

Every clip shows a skin-coloured field with a dark "lesion" disc that drifts across it, and a
frame-index bar code along the top edge (8 px tall, one 8 px cell per bit, black=0 white=1) that
survives H.264 compression, so a test can tell which source frame it is looking at
(:func:`read_index`). Sizes are (W, H); arrays are H×W×3 uint8 BGR.

Typical use::

    clip = write_clip(tmp_path / "cfr.mp4", frames=24)                 # H.264, 25 fps, no B-frames
    clip = write_clip(tmp_path / "vfr.mp4", pts=vfr_pts(30))           # variable frame rate
    clip = write_clip(tmp_path / "av.mp4", audio=True, bframes=2)      # AAC audio, B-frames
    clip = write_clip(tmp_path / "odd.mkv", size_wh=(161, 121), codec="ffv1")
    probe(clip.path).video_pts == clip.pts
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SKIN_BGR = (150, 170, 215)
LESION_BGR = (40, 55, 90)
BAR_BITS = 12  # frame indices up to 4095
BAR_CELL = 8  # px per bit, and bar height


@dataclass(frozen=True)
class Clip:
    """A written clip, described by what the file itself stores (read back after writing)."""

    path: Path
    size_wh: tuple[int, int]  # (width, height) as coded (before any display rotation)
    pts: tuple[int, ...]  # video PTS in presentation order, in ``time_base`` units
    time_base: Fraction  # the video stream's time base as muxed (muxers may change it)
    audio: bool
    codec: str
    pix_fmt: str

    @property
    def frame_count(self) -> int:
        """Number of video frames."""
        return len(self.pts)

    @property
    def pts_seconds(self) -> list[Fraction]:
        """Exact presentation times in seconds."""
        return [p * self.time_base for p in self.pts]


@dataclass(frozen=True)
class Probe:
    """What demuxing a file (without decoding) says about it."""

    video_pts: tuple[int, ...]  # sorted: presentation order
    time_base: Fraction | None
    size_wh: tuple[int, int] | None
    codec: str | None
    pix_fmt: str | None
    audio_codec: str | None
    audio_packets: int
    audio_pts: tuple[int, ...]  # in demux order
    audio_time_base: Fraction | None = None

    @property
    def pts_seconds(self) -> list[Fraction]:
        """Exact video presentation times in seconds."""
        return [p * self.time_base for p in self.video_pts]

    @property
    def audio_seconds(self) -> list[Fraction]:
        """Exact audio packet times in seconds."""
        return [p * self.audio_time_base for p in self.audio_pts]


def synthetic_frame(index: int, size_wh: tuple[int, int] = (160, 120)) -> np.ndarray:
    """The H×W×3 uint8 BGR test image for frame ``index``: skin, a lesion disc, an index bar."""
    w, h = size_wh
    img = np.empty((h, w, 3), np.uint8)
    img[:] = SKIN_BGR
    # a slow drift keeps consecutive frames similar, like real dermatoscope video
    cx = w / 2 + 0.25 * w * math.sin(index / 8)
    cy = h / 2 + 0.15 * h * math.cos(index / 11)
    r = 0.2 * min(w, h)
    # only the disc's bounding box is tested: full-frame grids take tens of seconds at 8K
    y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
    x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    img[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = LESION_BGR
    if h >= BAR_CELL and w >= BAR_CELL:
        for bit in range(min(BAR_BITS, w // BAR_CELL)):
            on = (index >> bit) & 1
            img[:BAR_CELL, bit * BAR_CELL : (bit + 1) * BAR_CELL] = 255 if on else 0
    return img


def read_index(img: np.ndarray) -> int:
    """Decode the frame-index bar of a (possibly lossy-coded) :func:`synthetic_frame`."""
    index = 0
    bits = min(BAR_BITS, img.shape[1] // BAR_CELL)
    for bit in range(bits):
        cell = img[2 : BAR_CELL - 2, bit * BAR_CELL + 2 : (bit + 1) * BAR_CELL - 2]
        if cell.mean() > 127:
            index |= 1 << bit
    return index


def vfr_pts(frames: int, time_base: Fraction = Fraction(1, 1000)) -> list[int]:
    """Strictly increasing, irregular PTS (in ``time_base`` units): 40, 10 and 120 ms gaps."""
    gaps_ms = (40, 40, 10, 120, 40, 33, 67)
    pts, t_ms = [], 0
    for i in range(frames):
        pts.append(round(Fraction(t_ms, 1000) / time_base))
        t_ms += gaps_ms[i % len(gaps_ms)]
    return pts


def write_clip(
    path: str | Path,
    *,
    frames: int = 24,
    size_wh: tuple[int, int] = (160, 120),
    fps: int = 25,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    codec: str = "libx264",
    pix_fmt: str | None = None,
    bframes: int = 0,
    gop: int | None = None,
    audio: bool = False,
    audio_codec: str = "aac",
    rotation: int | None = None,
    container_format: str | None = None,
) -> Clip:
    """Encode a synthetic clip and return what the file stores.

    Args:
        path: output file; the extension picks the container unless ``container_format`` does.
        frames: number of video frames.
        size_wh: (width, height). Odd sizes need a codec/pix_fmt that allows them (ffv1, or
            libx264 with yuv444p).
        fps: nominal rate; frame i gets PTS i * time_base⁻¹ / fps when ``pts`` is None.
        pts: explicit PTS per frame in ``time_base`` units (variable frame rate).
        time_base: encoder time base; default 1/fps (CFR) or 1/1000 (explicit PTS).
        codec: "libx264", "ffv1", "mjpeg", "mpeg4", ...
        pix_fmt: coded pixel format; default yuv420p (yuvj420p for mjpeg).
        bframes: B-frames for libx264 (>0: decode order differs from presentation order).
        gop: keyframe interval in frames (default: the encoder's).
        audio: add a mono 16 kHz tone as long as the video.
        audio_codec: its encoder ("aac", "pcm_s16le", "pcm_mulaw", "mp3", ...).
        rotation: display rotation in degrees counter-clockwise (stream display matrix).
        container_format: force a muxer ("mp4", "matroska", "mpegts", ...).

    Returns:
        The :class:`Clip`, with PTS and time base read back from the written file.
    """
    path = Path(path)
    if pts is None:
        time_base = time_base or Fraction(1, fps)
        pts = [round(Fraction(i, fps) / time_base) for i in range(frames)]
    else:
        time_base = time_base or Fraction(1, 1000)
        frames = len(pts)
    pix_fmt = pix_fmt or ("yuvj420p" if codec == "mjpeg" else "yuv420p")
    options = {}
    if codec == "libx264":
        options = {"preset": "veryfast" if bframes else "ultrafast"}
        options["x264-params"] = f"bframes={bframes}" + (f":keyint={gop}" if gop else "")
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream(codec, rate=fps, options=options)
        video.width, video.height = size_wh
        video.pix_fmt = pix_fmt
        video.time_base = time_base
        video.codec_context.time_base = time_base
        if gop and codec != "libx264":
            video.codec_context.gop_size = gop
        if rotation is not None:
            video.set_display_rotation(rotation)
        tone = _add_tone(out, audio_codec) if audio else None
        duration = float((pts[-1] * time_base) + Fraction(1, fps))
        audio_done = 0.0
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, size_wh), format="bgr24")
            frame.pts, frame.time_base = p, time_base
            out.mux(video.encode(frame))
            if tone is not None:  # keep audio roughly interleaved with video
                audio_done = tone.write_until(min(duration, float(p * time_base) + 0.1))
        out.mux(video.encode())
        if tone is not None:
            tone.write_until(max(duration, audio_done))
            tone.flush()
    info = probe(path)
    return Clip(
        path=path,
        size_wh=info.size_wh,
        pts=info.video_pts,
        time_base=info.time_base,
        audio=info.audio_codec is not None,
        codec=info.codec,
        pix_fmt=info.pix_fmt,
    )


class _Tone:
    """A 440 Hz mono tone, encoded as it goes in 1024-sample frames."""

    RATE, SAMPLES = 16000, 1024

    def __init__(self, out, stream) -> None:
        self.out, self.stream, self.written = out, stream, 0

    def write_until(self, seconds: float) -> float:
        while self.written < seconds * self.RATE:
            t = (self.written + np.arange(self.SAMPLES)) / self.RATE
            wave = 0.2 * np.sin(2 * np.pi * 440 * t)[None, :]
            fmt = self.stream.codec_context.format.name
            pcm = (
                (wave * 32767).astype(np.int16)
                if fmt.startswith("s16")
                else wave.astype(np.float32)
            )
            frame = av.AudioFrame.from_ndarray(pcm, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = self.RATE, self.written
            frame.time_base = Fraction(1, self.RATE)
            self.out.mux(self.stream.encode(frame))
            self.written += self.SAMPLES
        return self.written / self.RATE

    def flush(self) -> None:
        self.out.mux(self.stream.encode())


def _add_tone(out, codec: str = "aac") -> _Tone:
    stream = out.add_stream(codec, rate=_Tone.RATE, layout="mono")
    if codec.startswith("pcm_"):
        stream.codec_context.format = "s16"
    return _Tone(out, stream)


def write_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An .mp4 (or any extension) with an AAC stream and no video stream."""
    with av.open(str(path), "w", format="mp4" if str(path).endswith(".mp4") else None) as out:
        tone = _add_tone(out)
        tone.write_until(seconds)
        tone.flush()
    return Path(path)


def write_text_as_video(path: str | Path) -> Path:
    """A text file with a video extension."""
    Path(path).write_text("this is not a video, just some notes\n" * 20)
    return Path(path)


def mp4_boxes(path: str | Path) -> list[tuple[str, int, int]]:
    """Top-level MP4 boxes as (type, offset, size), for cutting and checking files."""
    boxes, data = [], Path(path).read_bytes()
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        elif size == 0:
            size = len(data) - offset
        if size < 8:
            break
        boxes.append((kind, offset, size))
        offset += size
    return boxes


def cut_before_moov(src: str | Path, dst: str | Path) -> Path:
    """Copy an MP4 whose index ('moov') comes last without that index: a recording cut short."""
    boxes = mp4_boxes(src)
    moov = next(off for kind, off, _ in boxes if kind == "moov")
    first_media = next(off for kind, off, _ in boxes if kind == "mdat")
    if moov < first_media:
        raise ValueError(f"{src}: 'moov' comes before the media data; nothing to cut")
    Path(dst).write_bytes(Path(src).read_bytes()[:moov])
    return Path(dst)


def corrupt(
    src: str | Path, dst: str | Path, *, spots: int = 3, length: int = 300, seed: int = 0
) -> Path:
    """Copy ``src`` with ``spots`` runs of random bytes written over its middle part."""
    data = bytearray(Path(src).read_bytes())
    rng = np.random.default_rng(seed)
    for k in range(1, spots + 1):
        offset = len(data) * k // (spots + 1)
        data[offset : offset + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def scramble_media(src: str | Path, dst: str | Path, *, seed: int = 0) -> Path:
    """Copy an MP4 with all of its media data ('mdat') random: intact index, no picture."""
    data = bytearray(Path(src).read_bytes())
    _, offset, size = next(box for box in mp4_boxes(src) if box[0] == "mdat")
    noise = np.random.default_rng(seed).integers(0, 256, size - 8, dtype=np.uint8)
    data[offset + 8 : offset + size] = noise.tobytes()
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def probe(path: str | Path) -> Probe:
    """Demux ``path`` (no decoding) and report its video PTS, time base and audio packets."""
    video_pts, audio_pts = [], []
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        streams = [s for s in (video, audio) if s is not None]
        for packet in container.demux(streams):
            if packet.pts is None:
                continue
            (video_pts if packet.stream is video else audio_pts).append(packet.pts)
        return Probe(
            video_pts=tuple(sorted(video_pts)),
            time_base=video.time_base if video else None,
            size_wh=(video.codec_context.width, video.codec_context.height) if video else None,
            codec=video.codec_context.name if video else None,
            pix_fmt=video.codec_context.pix_fmt if video else None,
            audio_codec=audio.codec_context.name if audio else None,
            audio_packets=len(audio_pts),
            audio_pts=tuple(audio_pts),
            audio_time_base=audio.time_base if audio else None,
        )


def audio_seconds(path: str | Path) -> Fraction:
    """How long the first audio stream of ``path`` plays: its decoded samples / sample rate."""
    with av.open(str(path)) as container:
        samples, rate = 0, None
        for frame in container.decode(audio=0):
            samples, rate = samples + frame.samples, frame.sample_rate
    return Fraction(samples, rate) if rate else Fraction(0)


def decode_video(path: str | Path, *, fmt: str = "bgr24") -> list[tuple[int, np.ndarray]]:
    """Every decodable video frame of ``path`` as (pts, H×W×C array), in presentation order."""
    with av.open(str(path)) as container:
        return [(f.pts, f.to_ndarray(format=fmt)) for f in container.decode(video=0)]


def run_python_unprivileged(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python that file permissions apply to, even when we are root.

    As root, the child runs under ``setpriv`` without the capabilities that bypass file modes
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a 0o555 directory really is read-only for it.
    The repository root and ``tests/`` are on its ``sys.path``.
    """
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise RuntimeError("running as root without setpriv: cannot drop file privileges")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
