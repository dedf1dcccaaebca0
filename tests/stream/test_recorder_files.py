"""File mode on the files real recorders write: every frame, PTS, time base and the audio kept.

Each input is built here with PyAV the way a capture card, a phone, a camera or an editor
writes it (stereo PCM without a channel layout, an edit list that trims frames, audio that
runs on after the video, an AVI's empty dropped-frame chunk, cover art, a thumbnail stream,
90 kHz timestamps, a mirrored display matrix), goes through the real CLI, and the output MP4 is
read back with PyAV: it plays to its last frame, with the input's PTS in the input's time base.
"""

from __future__ import annotations

import os
import threading
from fractions import Fraction

import av
import numpy as np
import pytest
from support.media import audio_seconds, decode_video, probe, read_index, synthetic_frame
from support.nets import save_no_lesion
from support.reliability import run_cli

from stream.errors import SinkError
from stream.outputs import MaskVideoSink, VideoSink
from stream.outputs import audio as audio_output
from stream.queues import EOS
from stream.sources import open_source

SIZE_WH = (96, 64)
SAMPLE_DTYPES = {"s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}


@pytest.fixture(scope="module")
def no_lesion(tmp_path_factory):
    """Weights of a generator whose every probability is ~0: nothing drawn over the frames."""
    return save_no_lesion(tmp_path_factory.mktemp("w") / "no_lesion.pt")


def write_input(path, *, frames=10, fps=25, codec="libx264", time_base=None, first_pts=0,
                audio_codec=None, layout="mono", audio_s=None, rate=16000, fmt=None,
                empty_at=(), mirror=None, thumbnail=False, cover=False, video=True):
    """Mux a test input; see the module docstring for what each option imitates.

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


def _process(path, tmp_path, no_lesion, *extra):
    out = tmp_path / "out.mp4"
    run = run_cli("--video", path, "--output", out, "--no-hud", "--weights", no_lesion, *extra)
    return run, out


def _shown_frames(path) -> list[tuple[int, Fraction]]:
    """(pts, time base) of every frame a player shows, decoded from ``path``'s video."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams.video if not s.disposition & 1024)
        return [(f.pts, f.time_base) for f in container.decode(stream)]


def _assert_plays_like(out, source, *, frames: int) -> None:
    """``out`` decodes to ``frames`` frames with the source's PTS ticks and time base."""
    want = _shown_frames(source)
    got = _shown_frames(out)
    assert len(got) == len(want) == frames
    assert got == want
    decoded = decode_video(out)
    assert [read_index(image) for _, image in decoded] == sorted(
        read_index(image) for _, image in decoded)


# ---- 1. audio that FFmpeg's MP4 muxer refused silently ----------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "codec"), [("capture.avi", "mjpeg"), ("capture.mkv", "libx264")])
def test_stereo_pcm_without_a_channel_layout_gives_a_playable_mp4_with_all_its_audio(
        tmp_path, no_lesion, name, codec):
    # given a capture card's file: stereo PCM whose container states 2 channels, no layout
    clip = write_input(tmp_path / name, codec=codec, audio_codec="pcm_s16le", layout="stereo")
    with av.open(str(clip)) as container:
        assert container.streams.audio[0].layout.name == "2 channels"
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then the MP4 plays to its last frame with the input's PTS and time base, and all the audio
    assert run.rc == 0, run.stderr
    _assert_plays_like(out, clip, frames=10)
    assert probe(out).audio_codec == "pcm_s16le"
    assert audio_seconds(out) == audio_seconds(clip) == Fraction(10, 25)


@pytest.mark.timeout(60)
def test_a_muxer_that_keeps_less_than_it_was_given_is_an_error_not_success(tmp_path,
                                                                          monkeypatch):
    # given stereo PCM without a layout, and the layout it needs not set (as before the fix):
    # FFmpeg's MP4 muxer logs "unsupported channel layout" and raises nothing
    clip = write_input(tmp_path / "capture.mkv", audio_codec="pcm_s16le", layout="stereo")
    monkeypatch.setattr(audio_output, "_standard_layout", lambda ctx: None)
    source = open_source(str(clip))
    sink = VideoSink(tmp_path / "out.mp4")
    sink.open(source.info)
    stop = threading.Event()
    source.start(stop)
    while (frame := source.queue.get(stop, timeout=20)) is not EOS:
        sink.write(frame)
    # when the file is closed
    with pytest.raises(SinkError) as failed:
        sink.close()
    # then the run fails with one line that says what the file lacks
    assert str(failed.value) == (
        f"cannot write {tmp_path / 'out.mp4'}: the muxer wrote 0 of 10 frames (FFmpeg refused "
        "part of it); the file is broken: 0 of 10 frames can be played")
    assert "\n" not in str(failed.value)
    assert source.join(5)


@pytest.mark.timeout(120)
def test_audio_mp4_cannot_hold_is_transcoded_to_aac_with_a_note(tmp_path, no_lesion):
    # given an AVI with µ-law audio (MP4 has no place for it)
    clip = write_input(tmp_path / "ulaw.avi", codec="mjpeg", audio_codec="pcm_mulaw",
                       layout="stereo", rate=8000)
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then the audio is AAC of the same length (to one AAC frame), and the user is told
    assert run.rc == 0, run.stderr
    _assert_plays_like(out, clip, frames=10)
    assert probe(out).audio_codec == "aac"
    assert abs(audio_seconds(out) - audio_seconds(clip)) <= Fraction(1024, 8000)
    assert any("transcoded to AAC" in line for line in run.warnings)


# ---- 2. valid files called damaged -----------------------------------------------------------


@pytest.mark.timeout(120)
def test_an_edit_list_that_trims_frames_is_not_damage(tmp_path, no_lesion):
    # given an MP4 of 30 coded frames whose edit list shows the last 10 (a cut without
    # re-encoding)
    clip = write_input(tmp_path / "cut.mp4", frames=30, first_pts=-20)
    with av.open(str(clip)) as container:
        assert container.streams.video[0].frames == 30
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then the 10 shown frames come out and nothing is called damaged
    assert run.rc == 0, run.stderr
    assert run.counts() == (10, 10)
    _assert_plays_like(out, clip, frames=10)
    assert not [line for line in run.warnings if "damaged" in line or "unreadable" in line]


@pytest.mark.timeout(120)
def test_an_avi_dropped_frame_chunk_is_not_damage(tmp_path, no_lesion):
    # given an AVI whose 5th frame is an empty chunk (the recorder dropped it)
    clip = write_input(tmp_path / "drop.avi", codec="mjpeg", empty_at=(4,))
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then the 9 pictures come out at their own times, and nothing is called damaged
    assert run.rc == 0, run.stderr
    _assert_plays_like(out, clip, frames=9)
    assert [pts for pts, _ in _shown_frames(out)] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert not [line for line in run.warnings if "damaged" in line or "unreadable" in line]


# ---- 2 and 3. audio after the last video packet: kept, and not called damage -----------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "codec", "audio", "rate"), [
    ("long-audio.webm", "libvpx-vp9", "libopus", 48000),
    ("long-audio.mkv", "libx264", "aac", 16000),
    ("long-audio.ts", "libx264", "aac", 16000),
])
def test_audio_that_runs_on_after_the_video_is_kept_whole(tmp_path, no_lesion, name, codec,
                                                         audio, rate):
    # given a container that states no frame count, with 3.0 s of audio and 0.64 s of video
    clip = write_input(tmp_path / name, frames=16, codec=codec, audio_codec=audio, rate=rate,
                       audio_s=3.0, time_base=Fraction(1, 1000) if name != "long-audio.ts"
                       else None)
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then every frame and all 3 s of audio are in the MP4, and nothing is called damaged
    assert run.rc == 0, run.stderr
    _assert_plays_like(out, clip, frames=16)
    want = audio_seconds(clip)
    assert want >= 3
    if audio == "libopus":
        # WebM trims the last Opus frame's padding; a fragmented MP4 has no place to say so
        # (its edit list is written with the first fragment), so up to one 20 ms frame more
        assert want <= audio_seconds(out) <= want + Fraction(20, 1000)
    else:
        assert audio_seconds(out) == want
    assert not [line for line in run.warnings if "damaged" in line or "stopped" in line]


# ---- 4. which stream is the video ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_cover_art_is_not_a_video(tmp_path, no_lesion):
    # given an MP3 with cover art
    song = write_input(tmp_path / "song.mp3", video=False, cover=True, audio_codec="libmp3lame",
                       rate=44100, audio_s=0.5)
    # when given as the video
    run, out = _process(song, tmp_path, no_lesion)
    # then one line says there is no video, only audio and a picture
    assert run.rc != 0 and not run.has_traceback
    assert run.error_lines == [
        f"error: {song} has no video stream (it holds: audio mp3, attached picture mjpeg)"]
    assert not out.exists()


@pytest.mark.timeout(120)
def test_the_recording_is_chosen_over_a_thumbnail_and_the_choice_is_said(tmp_path, no_lesion):
    # given a file whose first video stream is a one-frame thumbnail, the second the recording
    clip = write_input(tmp_path / "thumb.mkv", thumbnail=True, time_base=Fraction(1, 1000))
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then the recording's 10 frames come out, and a warning names the stream taken
    assert run.rc == 0, run.stderr
    assert run.counts() == (10, 10)
    with av.open(str(clip)) as container:
        want = [(f.pts, f.time_base) for f in container.decode(video=1)]
    assert _shown_frames(out) == want
    assert any("processing the longest, #1 h264 96×64" in line and "--video-stream" in line
               for line in run.warnings)
    # and --video-stream 0 takes the thumbnail instead
    run, out = _process(clip, tmp_path, no_lesion, "--video-stream", "0")
    assert run.rc == 0, run.stderr
    assert run.counts() == (1, 1)


# ---- 5 and 6. time base and PTS kept to the tick ---------------------------------------------


@pytest.mark.timeout(120)
def test_90khz_timestamps_that_are_not_whole_milliseconds_keep_every_tick(tmp_path, no_lesion):
    # given an MPEG-TS whose first PTS falls between milliseconds
    clip = write_input(tmp_path / "cam.ts", fmt="mpegts", time_base=Fraction(1, 90000),
                       first_pts=37, audio_codec="aac")
    first = _shown_frames(clip)[0]
    assert first[1] == Fraction(1, 90000) and first[0] % 90 != 0
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then every frame has the input's PTS to the tick, in 1/90000
    assert run.rc == 0, run.stderr
    _assert_plays_like(out, clip, frames=10)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("time_base", [Fraction(1, 1000), Fraction(1, 25)])
def test_the_time_base_is_kept(tmp_path, no_lesion, time_base):
    # given Matroska's 1/1000 or AVI's 1/25
    name = "tb.mkv" if time_base == Fraction(1, 1000) else "tb.avi"
    clip = write_input(tmp_path / name, codec="mjpeg", time_base=time_base)
    assert _shown_frames(clip)[0][1] == time_base
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then the MP4's video stream has that time base and the same PTS
    assert run.rc == 0, run.stderr
    assert probe(out).time_base == time_base
    _assert_plays_like(out, clip, frames=10)


# ---- 7. a mirrored display matrix ------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("mirror", "shown"), [
    ((0, True, False), lambda img: img[:, ::-1]),
    ((90, True, False), lambda img: np.rot90(img, 1)[:, ::-1]),
    ((180, False, True), lambda img: img[:, ::-1]),  # turned over and flipped: a left-right mirror
])
def test_a_mirrored_display_matrix_is_shown_mirrored(tmp_path, no_lesion, mirror, shown):
    # given a clip whose display matrix turns (counter-clockwise) and mirrors the picture
    clip = write_input(tmp_path / "scope.mp4", frames=3, mirror=mirror)
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then the output shows what a player shows: the turn and the mirror, and says so
    assert run.rc == 0, run.stderr
    decoded = decode_video(out)
    for index, (_, image) in enumerate(decoded):
        want = shown(synthetic_frame(index, SIZE_WH)).astype(np.int16)
        assert image.shape == want.shape
        assert np.abs(image - want).mean() < 8  # H.264 twice; a wrong flip is off by ~40
    assert any("mirrored" in line for line in run.warnings)


# ---- 8. a resolution change under --mask-video -----------------------------------------------


def write_resized(path, sizes_wh=((96, 64), (160, 120)), *, per_size=4):
    """An MJPEG MKV whose frames change size mid-stream (a scope switched to another mode)."""
    time_base, i = Fraction(1, 1000), 0
    with av.open(str(path), "w") as out:
        v = out.add_stream("mjpeg", rate=25)
        v.width, v.height = sizes_wh[0]
        v.pix_fmt, v.time_base = "yuvj420p", time_base
        out.start_encoding()
        for size_wh in sizes_wh:
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height = size_wh
            encoder.pix_fmt, encoder.time_base = "yuvj420p", time_base
            for _ in range(per_size):
                frame = av.VideoFrame.from_ndarray(synthetic_frame(i, size_wh), format="bgr24")
                for packet in encoder.encode(frame.reformat(format="yuvj420p")):
                    packet.stream, packet.time_base = v, time_base
                    packet.pts = packet.dts = i * 40
                    out.mux(packet)
                i += 1
    return path


@pytest.mark.timeout(60)
def test_masks_after_a_resolution_change_stay_0_and_255_in_the_mask_video(tmp_path):
    # given a clip that switches from 96×64 to 160×120 after 4 frames, with masks at each
    # frame's own size (what the segmenter gives)
    clip = write_resized(tmp_path / "switch.mkv")
    source = open_source(str(clip))
    sink = MaskVideoSink(tmp_path / "masks.mkv")
    sink.open(source.info)
    stop = threading.Event()
    source.start(stop)
    masks = []
    while (frame := source.queue.get(stop, timeout=20)) is not EOS:
        frame.mask = (frame.image[..., 1] > 128).astype(np.uint8)
        masks.append(frame.mask)
        sink.write(frame)
    sink.close()
    assert source.join(5)
    assert [m.shape for m in masks] == [(64, 96)] * 4 + [(120, 160)] * 4
    # when the mask video is read back
    decoded = [image for _, image in decode_video(sink.path, fmt="gray")]
    # then every mask is 0/255 at the size the file was opened with, the resized ones taken
    # pixel by pixel from the frame's own mask, and a note says so
    assert len(decoded) == 8
    for mask, image in zip(masks, decoded, strict=True):
        assert image.shape == (64, 96)
        assert set(np.unique(image)) <= {0, 255}
        rows = np.arange(64) * mask.shape[0] // 64
        cols = np.arange(96) * mask.shape[1] // 96
        assert np.array_equal(image, 255 * mask[rows][:, cols])
    assert any("nearest neighbour, still 0/255" in note for note in sink.warnings)


# ---- 9. the smaller ones ---------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_retime_warning_says_how_far_frames_moved(tmp_path, no_lesion):
    # given a clip whose 4th frame's PTS (67 ms) falls before the 3rd's (80 ms)
    time_base, pts = Fraction(1, 1000), [0, 40, 80, 67, 120, 160]
    dts = [0, 30, 60, 66, 120, 160]  # increasing and never past the PTS, as muxers require
    clip = tmp_path / "back.mkv"
    with av.open(str(clip), "w") as out:
        v = out.add_stream("mjpeg", rate=25)
        v.width, v.height = SIZE_WH
        v.pix_fmt, v.time_base = "yuvj420p", time_base
        out.start_encoding()
        for i in range(len(pts)):
            image = av.VideoFrame.from_ndarray(synthetic_frame(i, SIZE_WH), format="bgr24")
            for packet in v.encode(image):
                packet.pts, packet.dts, packet.time_base = pts[i], dts[i], time_base
                out.mux(packet)
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then the frame goes one tick past 80 ms, and the warning says it moved 14 ms
    assert run.rc == 0, run.stderr
    assert [p for p, _ in _shown_frames(out)] == [0, 40, 80, 81, 120, 160]
    retimed = [line for line in run.warnings if "non-increasing" in line]
    assert retimed == ["warning: out.mp4: 1 frame(s) had non-increasing timestamps and were "
                       "moved later to keep them in order, by up to 14 ms"]


@pytest.mark.timeout(60)
def test_a_mask_dir_where_no_directory_can_be_made_is_one_line(tmp_path, no_lesion):
    # given /proc, which looks writable to root and takes no new directory
    target = "/proc/slsnet-masks"
    try:
        os.mkdir(target)
    except OSError:
        pass
    else:
        os.rmdir(target)
        pytest.skip("this system lets /proc take a directory")
    clip = write_input(tmp_path / "in.mkv", codec="mjpeg", frames=2)
    # when it is given as --mask-dir
    run = run_cli("--video", clip, "--mask-dir", target, "--weights", no_lesion)
    # then one error line, no traceback
    assert run.rc != 0 and not run.has_traceback
    assert len(run.error_lines) == 1
    assert run.error_lines[0].startswith(f"error: cannot create mask directory {target}")
    assert "Errno" not in run.stderr


@pytest.mark.timeout(120)
def test_the_padding_warning_is_printed_once(tmp_path, no_lesion):
    # given a clip of odd sides (FFV1 keeps them)
    clip = tmp_path / "odd.mkv"
    with av.open(str(clip), "w") as out:
        v = out.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = 95, 63, "yuv420p"
        for i in range(3):
            image = av.VideoFrame.from_ndarray(synthetic_frame(i, (95, 63)), format="bgr24")
            out.mux(v.encode(image.reformat(format="yuv420p")))
        out.mux(v.encode())
    # when processed
    run, out = _process(clip, tmp_path, no_lesion)
    # then the padding is said once
    assert run.rc == 0, run.stderr
    assert len([line for line in run.warnings if "padded to 96×64" in line]) == 1


@pytest.mark.timeout(120)
def test_an_output_device_that_takes_nothing_is_an_error_not_frames_written(tmp_path, no_lesion):
    # given /dev/full, where every write fails with ENOSPC (a small output fails only when the
    # last fragment is flushed at close)
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    clip = write_input(tmp_path / "in.mkv", codec="mjpeg", frames=4)
    # when it is the output
    run = run_cli("--video", clip, "--output", "/dev/full", "--no-hud", "--weights", no_lesion)
    # then one line says the disk is full and nothing plays; no line says frames were written
    assert run.rc != 0 and not run.has_traceback
    assert run.error_lines == [
        "error: sink video failed: cannot write /dev/full: disk full (No space left on device); "
        "the file is incomplete: 0 of 4 frames can be played"]
    assert not [line for line in run.warnings if "were written" in line]
