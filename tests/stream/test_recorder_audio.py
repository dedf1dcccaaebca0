"""File mode on recorders' audio: every sample kept, in a form MP4 holds, or an error.

Stereo PCM without a channel layout (capture cards), audio MP4 has no place for, and audio that
runs on after the last video packet, each built with PyAV (support.recorders), through the real
CLI, the MP4 read back.
"""

from __future__ import annotations

import threading
from fractions import Fraction

import av
import pytest
from support.media import audio_seconds, probe
from support.nets import save_no_lesion
from support.recorders import assert_plays_like, process, write_input

from stream.errors import SinkError
from stream.outputs import VideoSink
from stream.outputs import audio as audio_output
from stream.queues import EOS
from stream.sources import open_source


@pytest.fixture(scope="module")
def no_lesion(tmp_path_factory):
    """Weights of a generator whose every probability is ~0: nothing drawn over the frames."""
    return save_no_lesion(tmp_path_factory.mktemp("w") / "no_lesion.pt")


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
    run, out = process(clip, tmp_path, no_lesion)
    # then the MP4 plays to its last frame with the input's PTS and time base, and all the audio
    assert run.rc == 0, run.stderr
    assert_plays_like(out, clip, frames=10)
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
    run, out = process(clip, tmp_path, no_lesion)
    # then the audio is AAC of the same length (to one AAC frame), and the user is told
    assert run.rc == 0, run.stderr
    assert_plays_like(out, clip, frames=10)
    assert probe(out).audio_codec == "aac"
    assert abs(audio_seconds(out) - audio_seconds(clip)) <= Fraction(1024, 8000)
    assert any("transcoded to AAC" in line for line in run.warnings)


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
    run, out = process(clip, tmp_path, no_lesion)
    # then every frame and all 3 s of audio are in the MP4, and nothing is called damaged
    assert run.rc == 0, run.stderr
    assert_plays_like(out, clip, frames=16)
    want = audio_seconds(clip)
    assert want >= 3
    if audio == "libopus":
        # WebM trims the last Opus frame's padding; a fragmented MP4 has no place to say so
        # (its edit list is written with the first fragment), so up to one 20 ms frame more
        assert want <= audio_seconds(out) <= want + Fraction(20, 1000)
    else:
        assert audio_seconds(out) == want
    assert not [line for line in run.warnings if "damaged" in line or "stopped" in line]
