"""Inputs as real recorders write them, muxed with PyAV, and the checks of file mode's output.

:func:`write_input` builds each kind of file the way a capture card, a phone, a camera or an
editor writes it (stereo PCM without a channel layout, an edit list that trims frames, audio that
runs on after the video, an AVI's empty dropped-frame chunk, cover art, a thumbnail stream,
90 kHz timestamps, a mirrored display matrix); :func:`process` runs it through the real CLI and
:func:`assert_plays_like` reads the output MP4 back: it plays to its last frame, with the input's
PTS in the input's time base.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from support.media import decode_video, read_index, synthetic_frame
from support.reliability import run_cli

SIZE_WH = (96, 64)
SAMPLE_DTYPES = {"s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}


def write_input(path, *, frames=10, fps=25, codec="libx264", time_base=None, first_pts=0,
                audio_codec=None, layout="mono", audio_s=None, rate=16000, fmt=None,
                empty_at=(), mirror=None, thumbnail=False, cover=False, video=True):
    """Mux a test input; the module docstring says what each option imitates.

    Args:
        first_pts: the first frame's PTS (negative: an edit list trims those frames in MP4).
        empty_at: frame numbers muxed as empty packets (AVI's dropped-frame chunks).
        mirror: (rotation, hflip, vflip) for the display matrix.
        thumbnail: a one-frame MJPEG video stream before the real one.
        cover: an attached picture (cover art) stream.
    """
    time_base = time_base or Fraction(1, fps)
    step = round(Fraction(1, fps) / time_base)
    with av.open(str(path), "w", format=fmt) as out:
        thumb = _picture_stream(out, (32, 16), rate=1) if thumbnail else None
        v = None
        if video:
            options = {"preset": "ultrafast"} if codec == "libx264" else {}
            v = out.add_stream(codec, rate=fps, options=options)
            v.width, v.height = SIZE_WH
            v.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            v.time_base = v.codec_context.time_base = time_base
            if mirror:
                v.set_display_rotation(mirror[0], hflip=mirror[1], vflip=mirror[2])
        a = out.add_stream(audio_codec, rate=rate, layout=layout) if audio_codec else None
        if a is not None and audio_codec.startswith("pcm"):
            a.codec_context.format = "s16"
        pic = _picture_stream(out, (32, 32)) if cover else None
        if pic is not None:
            pic.disposition = av.stream.Disposition.attached_pic
        out.start_encoding()
        for extra in (pic, thumb):
            if extra is not None:
                still = av.VideoFrame.from_ndarray(
                    np.full((extra.height, extra.width, 3), 200, np.uint8), format="bgr24")
                still.pts = 0
                out.mux(extra.encode(still) + extra.encode())
        for i in range(frames if v is not None else 0):
            pts = first_pts + i * step
            if i in empty_at:
                packet = av.Packet(b"")
                packet.stream, packet.pts, packet.dts, packet.time_base = v, pts, pts, time_base
                out.mux(packet)
                continue
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, SIZE_WH), format="bgr24")
            frame.pts, frame.time_base = pts, time_base
            out.mux(v.encode(frame))
        if v is not None:
            out.mux(v.encode())
        if a is not None:
            _write_tone(out, a, audio_s if audio_s is not None else frames / fps, layout)
    return path


def _picture_stream(out, size_wh, rate=None):
    stream = out.add_stream("mjpeg", rate=rate) if rate else out.add_stream("mjpeg")
    stream.width, stream.height = size_wh
    stream.pix_fmt = "yuvj420p"
    return stream


def _write_tone(out, stream, seconds: float, layout: str) -> None:
    """A 440 Hz tone of exactly ``seconds`` (to the sample) on every channel."""
    ctx = stream.codec_context
    fmt, channels, rate = ctx.format.name, ctx.channels, ctx.sample_rate
    dtype = SAMPLE_DTYPES[fmt.rstrip("p")]
    done, total, size = 0, round(seconds * rate), ctx.frame_size or 1024
    while done < total:
        n = min(size, total - done)
        wave = 0.2 * np.sin(2 * np.pi * 440 * (done + np.arange(n)) / rate)
        if np.issubdtype(dtype, np.integer):
            wave = wave * np.iinfo(dtype).max
        samples = np.tile(wave.astype(dtype), (channels, 1))
        if not fmt.endswith("p"):
            samples = samples.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, done, Fraction(1, rate)
        out.mux(stream.encode(frame))
        done += n
    out.mux(stream.encode())


def process(path, tmp_path, no_lesion, *extra):
    """Run the CLI on ``path`` with the ``no_lesion`` weights; (the run, the output MP4's path)."""
    out = tmp_path / "out.mp4"
    run = run_cli("--video", path, "--output", out, "--no-hud", "--weights", no_lesion, *extra)
    return run, out


def shown_frames(path) -> list[tuple[int, Fraction]]:
    """(pts, time base) of every frame a player shows, decoded from ``path``'s video."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams.video if not s.disposition & 1024)
        return [(f.pts, f.time_base) for f in container.decode(stream)]


def assert_plays_like(out, source, *, frames: int) -> None:
    """``out`` decodes to ``frames`` frames with the source's PTS ticks and time base."""
    want = shown_frames(source)
    got = shown_frames(out)
    assert len(got) == len(want) == frames
    assert got == want
    decoded = decode_video(out)
    assert [read_index(image) for _, image in decoded] == sorted(
        read_index(image) for _, image in decoded)
