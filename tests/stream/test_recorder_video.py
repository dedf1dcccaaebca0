"""File mode on recorders' video: every frame, its PTS and time base, the stream a player shows.

Edit lists and AVI dropped-frame chunks (valid, not damage), cover art and thumbnail streams,
90 kHz and other time bases, frames stored out of order and mirrored display matrices, each built
with PyAV (support.recorders), through the real CLI, the MP4 read back.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from support.media import decode_video, probe, synthetic_frame
from support.nets import save_no_lesion
from support.recorders import SIZE_WH, assert_plays_like, process, shown_frames, write_input


@pytest.fixture(scope="module")
def no_lesion(tmp_path_factory):
    """Weights of a generator whose every probability is ~0: nothing drawn over the frames."""
    return save_no_lesion(tmp_path_factory.mktemp("w") / "no_lesion.pt")


# ---- 2. valid files called damaged -----------------------------------------------------------


@pytest.mark.timeout(120)
def test_an_edit_list_that_trims_frames_is_not_damage(tmp_path, no_lesion):
    # given an MP4 of 30 coded frames whose edit list shows the last 10 (a cut without
    # re-encoding)
    clip = write_input(tmp_path / "cut.mp4", frames=30, first_pts=-20)
    with av.open(str(clip)) as container:
        assert container.streams.video[0].frames == 30
    # when processed
    run, out = process(clip, tmp_path, no_lesion)
    # then the 10 shown frames come out and nothing is called damaged
    assert run.rc == 0, run.stderr
    assert run.counts() == (10, 10)
    assert_plays_like(out, clip, frames=10)
    assert not [line for line in run.warnings if "damaged" in line or "unreadable" in line]


@pytest.mark.timeout(120)
def test_an_avi_dropped_frame_chunk_is_not_damage(tmp_path, no_lesion):
    # given an AVI whose 5th frame is an empty chunk (the recorder dropped it)
    clip = write_input(tmp_path / "drop.avi", codec="mjpeg", empty_at=(4,))
    # when processed
    run, out = process(clip, tmp_path, no_lesion)
    # then the 9 pictures come out at their own times, and nothing is called damaged
    assert run.rc == 0, run.stderr
    assert_plays_like(out, clip, frames=9)
    assert [pts for pts, _ in shown_frames(out)] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert not [line for line in run.warnings if "damaged" in line or "unreadable" in line]


# ---- 4. which stream is the video ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_cover_art_is_not_a_video(tmp_path, no_lesion):
    # given an MP3 with cover art
    song = write_input(tmp_path / "song.mp3", video=False, cover=True, audio_codec="libmp3lame",
                       rate=44100, audio_s=0.5)
    # when given as the video
    run, out = process(song, tmp_path, no_lesion)
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
    run, out = process(clip, tmp_path, no_lesion)
    # then the recording's 10 frames come out, and a warning names the stream taken
    assert run.rc == 0, run.stderr
    assert run.counts() == (10, 10)
    with av.open(str(clip)) as container:
        want = [(f.pts, f.time_base) for f in container.decode(video=1)]
    assert shown_frames(out) == want
    assert any("processing the longest, #1 h264 96×64" in line and "--video-stream" in line
               for line in run.warnings)
    # and --video-stream 0 takes the thumbnail instead
    run, out = process(clip, tmp_path, no_lesion, "--video-stream", "0")
    assert run.rc == 0, run.stderr
    assert run.counts() == (1, 1)


# ---- 5 and 6. time base and PTS kept to the tick ---------------------------------------------


@pytest.mark.timeout(120)
def test_90khz_timestamps_that_are_not_whole_milliseconds_keep_every_tick(tmp_path, no_lesion):
    # given an MPEG-TS whose first PTS falls between milliseconds
    clip = write_input(tmp_path / "cam.ts", fmt="mpegts", time_base=Fraction(1, 90000),
                       first_pts=37, audio_codec="aac")
    first = shown_frames(clip)[0]
    assert first[1] == Fraction(1, 90000) and first[0] % 90 != 0
    # when processed
    run, out = process(clip, tmp_path, no_lesion)
    # then every frame has the input's PTS to the tick, in 1/90000
    assert run.rc == 0, run.stderr
    assert_plays_like(out, clip, frames=10)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("time_base", [Fraction(1, 1000), Fraction(1, 25)])
def test_the_time_base_is_kept(tmp_path, no_lesion, time_base):
    # given Matroska's 1/1000 or AVI's 1/25
    name = "tb.mkv" if time_base == Fraction(1, 1000) else "tb.avi"
    clip = write_input(tmp_path / name, codec="mjpeg", time_base=time_base)
    assert shown_frames(clip)[0][1] == time_base
    # when processed
    run, out = process(clip, tmp_path, no_lesion)
    # then the MP4's video stream has that time base and the same PTS
    assert run.rc == 0, run.stderr
    assert probe(out).time_base == time_base
    assert_plays_like(out, clip, frames=10)


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
    run, out = process(clip, tmp_path, no_lesion)
    # then the frame goes one tick past 80 ms, and the warning says it moved 14 ms
    assert run.rc == 0, run.stderr
    assert [p for p, _ in shown_frames(out)] == [0, 40, 80, 81, 120, 160]
    retimed = [line for line in run.warnings if "non-increasing" in line]
    assert retimed == ["warning: out.mp4: 1 frame(s) had non-increasing timestamps and were "
                       "moved later to keep them in order, by up to 14 ms"]


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
    run, out = process(clip, tmp_path, no_lesion)
    # then the output shows what a player shows: the turn and the mirror, and says so
    assert run.rc == 0, run.stderr
    decoded = decode_video(out)
    for index, (_, image) in enumerate(decoded):
        want = shown(synthetic_frame(index, SIZE_WH)).astype(np.int16)
        assert image.shape == want.shape
        assert np.abs(image - want).mean() < 8  # H.264 twice; a wrong flip is off by ~40
    assert any("mirrored" in line for line in run.warnings)
