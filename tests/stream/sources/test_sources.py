"""Sources on real encoded files: PyAV file decoding, OpenCV capture, errors at open time."""

import os
import shutil
import threading
import time
from fractions import Fraction

import cv2
import numpy as np
import pytest
from support.media import (
    corrupt,
    cut_before_moov,
    probe,
    read_index,
    run_python_unprivileged,
    scramble_media,
    synthetic_frame,
    vfr_pts,
    write_audio_only,
    write_clip,
    write_text_as_video,
)

from stream.errors import SourceError, StreamError
from stream.queues import EOS
from stream.sources import is_camera_spec, open_source
from stream.sources.camera import CameraSource
from stream.sources.file import FileSource


def drain(source, *, delay_s=0.0, timeout=20.0):
    """Start ``source`` and collect every frame until EOS."""
    stop = threading.Event()
    source.start(stop)
    frames = []
    while True:
        item = source.queue.get(stop, timeout=timeout)
        if item is EOS:
            break
        frames.append(item)
        time.sleep(delay_s)
    assert source.join(5)
    return frames


@pytest.mark.timeout(60)
def test_file_source_delivers_every_frame_with_the_file_pts(tmp_path):
    # given a 20-frame H.264 clip
    clip = write_clip(tmp_path / "cfr.mp4", frames=20)
    # when it is read through open_source
    source = open_source(str(clip.path))
    frames = drain(source)
    # then every frame arrives, in order, as BGR uint8 with the file's own timestamps
    assert source.info.size_wh == (160, 120)
    assert source.info.time_base == clip.time_base
    assert source.info.fps == pytest.approx(25.0)
    assert source.info.frame_count == 20 and not source.info.live
    assert source.info.path == str(clip.path)
    assert source.queue.policy == "lossless"
    assert [f.pts for f in frames] == list(clip.pts)
    assert [f.index for f in frames] == list(range(20))
    assert [read_index(f.image) for f in frames] == list(range(20))
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.time_base == clip.time_base and "decode" in f.timings for f in frames)
    assert source.stats() == {"decoded": 20, "dropped": 0, "unreadable": 0, "reconnects": 0}
    assert source.error is None


@pytest.mark.timeout(60)
def test_vfr_and_bframes_keep_presentation_order_and_timestamps(tmp_path):
    # given a variable-frame-rate clip with B-frames and audio
    clip = write_clip(tmp_path / "vfr.mp4", pts=vfr_pts(21), bframes=2, audio=True)
    # when decoded
    frames = drain(open_source(str(clip.path)))
    # then frames come in presentation order with the irregular PTS the file stores
    assert [read_index(f.image) for f in frames] == list(range(21))
    assert [f.pts for f in frames] == list(clip.pts)
    gaps = {b - a for a, b in zip(clip.pts, clip.pts[1:], strict=False)}
    assert len(gaps) > 2  # really variable


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "size_wh"),
    [
        ("gray.mkv", "ffv1", "gray", (160, 120)),
        ("rgba.mkv", "ffv1", "bgra", (160, 120)),
        ("p10.mp4", "libx264", "yuv420p10le", (160, 120)),
        ("odd444.mp4", "libx264", "yuv444p", (161, 121)),
        ("odd420.mkv", "ffv1", "yuv420p", (163, 117)),
    ],
)
def test_odd_pixel_formats_and_sizes_become_bgr_uint8(tmp_path, name, codec, pix_fmt, size_wh):
    # given a clip in an unusual pixel format or size
    clip = write_clip(tmp_path / name, frames=6, codec=codec, pix_fmt=pix_fmt, size_wh=size_wh)
    assert clip.pix_fmt == pix_fmt
    # when decoded
    source = open_source(str(clip.path))
    frames = drain(source)
    # then every frame is H×W×3 uint8 BGR at the coded size and looks like what was written
    w, h = size_wh
    assert source.info.size_wh == size_wh
    assert len(frames) == 6
    for i, frame in enumerate(frames):
        assert frame.image.shape == (h, w, 3) and frame.image.dtype == np.uint8
        assert frame.image.flags["C_CONTIGUOUS"]
        assert read_index(frame.image) == i
        expected = synthetic_frame(i, size_wh)
        if pix_fmt == "gray":
            expected = cv2.cvtColor(cv2.cvtColor(expected, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        assert np.abs(frame.image.astype(int) - expected).mean() < 6


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_rotation_metadata_is_applied_like_a_player(tmp_path, rotation):
    # given a clip whose display matrix says "rotate"
    clip = write_clip(tmp_path / "rot.mp4", frames=3, rotation=rotation)
    # when decoded by our source and, independently, by OpenCV (which auto-rotates)
    source = open_source(str(clip.path))
    frames = drain(source)
    ok, reference = cv2.VideoCapture(str(clip.path)).read()
    # then both show the same upright picture, and the source says it rotated
    assert ok
    assert frames[0].image.shape == reference.shape
    assert np.abs(frames[0].image.astype(int) - reference).mean() < 1
    w, h = (120, 160) if rotation % 180 else (160, 120)
    assert source.info.size_wh == (w, h)
    if rotation % 180:
        assert any("rotated" in note for note in source.warnings)


@pytest.mark.timeout(60)
def test_decoding_continues_past_corrupt_packets_and_counts_them(tmp_path):
    # given a clip with random bytes written over three places in its media data
    clip = write_clip(tmp_path / "ok.mp4", frames=40, bframes=2, audio=True)
    bad = corrupt(clip.path, tmp_path / "bad.mp4", spots=3, length=400)
    # when decoded
    source = open_source(str(bad))
    frames = drain(source)
    stats = source.stats()
    # then the good frames still arrive in order, and the unreadable ones are counted
    assert source.error is None
    assert stats["unreadable"] >= 1
    assert 20 <= len(frames) == stats["decoded"] < 40
    assert stats["decoded"] + stats["unreadable"] == 40  # the MP4 says how many it holds
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:], strict=False))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_damage_that_stops_the_demuxer_is_never_silent(tmp_path, seed):
    # given an H.264 Matroska file (no frame count in its header) with damaged bytes
    clip = write_clip(tmp_path / "ok.mkv", frames=120)
    bad = corrupt(clip.path, tmp_path / "bad.mkv", spots=3, length=300, seed=seed)
    # when decoded
    source = open_source(str(bad))
    frames = drain(source)
    # then either (nearly) every frame is accounted for, or the source says where it stopped
    accounted = len(frames) + source.stats()["unreadable"]
    stopped = [note for note in source.warnings if "reading stopped at" in note]
    assert accounted >= 108 or stopped
    if stopped:
        assert len(frames) < 108 and source.status == stopped[0]


@pytest.mark.timeout(60)
def test_realtime_paces_at_the_file_rate_and_drops_when_late(tmp_path):
    # given a 0.6 s clip at 25 fps
    clip = write_clip(tmp_path / "rt.mp4", frames=15)
    # when played with --realtime by a consumer that keeps up
    start = time.perf_counter()
    source = open_source(str(clip.path), realtime=True)
    frames = drain(source)
    elapsed = time.perf_counter() - start
    # then playback takes the clip's duration and nothing is lost
    assert source.queue.policy == "latest"
    assert len(frames) == 15
    assert elapsed >= float(clip.pts_seconds[-1]) * 0.9
    # when a slow consumer falls behind (queue of 2, 120 ms per frame)
    slow = open_source(str(clip.path), realtime=True, queue_size=2)
    got = drain(slow, delay_s=0.12)
    # then the newest frames win and the dropped ones are counted
    assert slow.stats()["dropped"] > 0
    assert len(got) + slow.stats()["dropped"] == 15
    assert read_index(got[-1].image) == 14


@pytest.mark.timeout(60)
def test_lossless_file_waits_for_a_slow_consumer_and_stops_on_request(tmp_path):
    # given a clip and a queue of 2
    clip = write_clip(tmp_path / "bp.mp4", frames=12)
    source = open_source(str(clip.path), queue_size=2)
    frames = drain(source, delay_s=0.02)
    # then nothing is dropped
    assert len(frames) == 12 and source.stats()["dropped"] == 0
    # when the consumer stops reading and sets stop while the producer waits on a full queue
    blocked = open_source(str(clip.path), queue_size=1)
    stop = threading.Event()
    blocked.start(stop)
    time.sleep(0.2)
    stop.set()
    # then the capture thread ends promptly
    assert blocked.join(2.0)
    assert blocked.error is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.mp4", "not found"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "is empty (0 bytes)"),
        (
            lambda d: cut_before_moov(write_clip(d / "full.mp4", frames=5).path, d / "cut.mp4"),
            "truncated MP4",
        ),
        (lambda d: write_audio_only(d / "audio.mp4"), "has no video stream (it holds: audio aac)"),
        (lambda d: write_text_as_video(d / "notes.mp4"), "not a video file"),
        (
            lambda d: scramble_media(write_clip(d / "full.mp4", frames=5).path, d / "noise.mp4"),
            "no video frame could be decoded",
        ),
    ],
    ids=["missing", "directory", "zero-byte", "no-moov", "audio-only", "text", "all-noise"],
)
def test_unusable_inputs_raise_one_clear_line(tmp_path, make, expected):
    # given an input that cannot be played
    path = make(tmp_path)
    # when opened
    with pytest.raises(SourceError) as info:
        open_source(str(path))
    # then the error is one line that names the file and the problem
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message
    assert isinstance(info.value, StreamError)


@pytest.mark.timeout(60)
def test_unreadable_file_is_a_permission_error(tmp_path):
    # given a clip nobody may read
    clip = write_clip(tmp_path / "secret.mp4", frames=3)
    os.chmod(clip.path, 0)
    # when a process without root's file powers opens it
    result = run_python_unprivileged(
        "from stream.sources import open_source\n"
        "from stream.errors import SourceError\n"
        "try:\n"
        f"    open_source({str(clip.path)!r})\n"
        "except SourceError as exc:\n"
        "    print('error:', exc)\n"
    )
    # then it gets one clear line
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"error: cannot read {clip.path}: permission denied\n"


def test_camera_specs_are_told_from_files():
    assert is_camera_spec(0) and is_camera_spec("2") and is_camera_spec("/dev/video1")
    assert not is_camera_spec("clip.mp4") and not is_camera_spec("/dev/videos/clip.mp4")


@pytest.mark.timeout(60)
def test_camera_that_does_not_exist_lists_what_was_tried():
    index = next(i for i in range(40, 64) if not os.path.exists(f"/dev/video{i}"))
    with pytest.raises(SourceError) as info:
        open_source(index)
    message = str(info.value)
    assert message.startswith(f"cannot open camera {index}: tried ")
    assert "V4L2" in message and "\n" not in message


@pytest.mark.timeout(60)
def test_camera_options_on_a_file_are_reported_as_ignored(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", frames=2)
    with open_source(str(clip.path), width=640, mjpg=True) as source:
        assert isinstance(source, FileSource)
        assert any("width, mjpg" in note for note in source.warnings)


@pytest.mark.timeout(60)
def test_camera_source_reads_through_opencv_and_gives_up_after_backoff(tmp_path):
    # given a "camera" that OpenCV opens (a real file) and that cannot be reopened once lost
    clip = write_clip(tmp_path / "cam.mp4", frames=10)
    # a queue that holds the whole clip: the file reads faster than a busy machine may drain it,
    # and dropping the oldest frames is what a camera queue should do (tested elsewhere)
    source = CameraSource(str(clip.path), max_reconnects=3, backoff_s=0.05, max_backoff_s=0.1,
                          queue_size=16)
    clip.path.unlink()  # the open handle still reads; every reopen will fail
    # when it is read to the end
    start = time.perf_counter()
    frames = drain(source)
    elapsed = time.perf_counter() - start
    # then it delivered live frames (no PTS, capture times) and gave up clearly after 3 tries
    assert source.info.live and source.queue.policy == "latest"
    assert source.info.name == f"camera:{clip.path}"
    assert [read_index(f.image) for f in frames] == list(range(10))
    assert all(f.pts is None and f.image.shape == (120, 160, 3) for f in frames)
    times = [f.capture_time for f in frames]
    assert times == sorted(times)
    assert isinstance(source.error, SourceError)
    assert "gave up after 3 reconnect attempts" in str(source.error)
    assert source.status == "camera lost"
    assert elapsed >= 0.05 + 0.1 + 0.1  # the backoff really waited
    assert source.stats()["reconnects"] == 0


@pytest.mark.timeout(60)
def test_camera_source_reconnects_and_says_so_on_the_next_frames(tmp_path):
    # given a "camera" that stops after 8 frames and can be reopened
    clip = write_clip(tmp_path / "cam.mp4", frames=8)
    # a queue deep enough for every frame it can give: none dropped, however late the reader
    source = CameraSource(str(clip.path), max_reconnects=2, backoff_s=0.05, queue_size=32)
    stop = threading.Event()
    source.start(stop)
    # when frames are read past the outage
    seen = []
    while len(seen) < 12:
        item = source.queue.get(stop, timeout=10)
        assert item is not EOS
        seen.append(item)
        time.sleep(0.005)
    stop.set()
    assert source.join(5)
    # then the stream resumes from the reopened device and the frames after it say so
    after = [f for f in seen if "source" in f.notes]
    assert after and after[0].notes["source"] == "camera reconnected after 1 attempt(s)"
    assert read_index(after[0].image) == 0
    assert source.stats()["reconnects"] == 1
    assert [f.index for f in seen] == sorted(f.index for f in seen)
    assert source.error is None


@pytest.mark.timeout(60)
def test_camera_settings_it_cannot_honour_are_reported(tmp_path):
    clip = write_clip(tmp_path / "cam.mp4", frames=2)
    with CameraSource(str(clip.path), width=320, height=240) as source:
        assert source.info.size_wh == (160, 120)
        assert any("not the requested 320×240" in note for note in source.warnings)
        assert source.info.time_base == Fraction(1, 1000)


@pytest.mark.timeout(60)
def test_a_source_is_released_when_never_started(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", frames=2)
    source = open_source(str(clip.path))
    source.close()
    source.close()
    assert source.join(0.1)
    shutil.move(clip.path, tmp_path / "moved.mp4")  # nothing holds it
    assert probe(tmp_path / "moved.mp4").video_pts == clip.pts
