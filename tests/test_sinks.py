"""Sinks on real encoded files: timing, audio, masks, CSV, crash safety and write errors."""

import csv
import os
import signal
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import (
    decode_video,
    mp4_boxes,
    probe,
    read_index,
    run_python_unprivileged,
    synthetic_frame,
    vfr_pts,
    write_clip,
)

from stream.errors import SinkError
from stream.frame import Frame, SourceInfo
from stream.queues import EOS
from stream.sink_base import PtsClock
from stream.sinks import CsvSink, MaskDirSink, MaskVideoSink, VideoSink, lesion_stats, open_sinks
from stream.sources import open_source

REPO = Path(__file__).resolve().parent.parent


def lesion_mask(image: np.ndarray) -> np.ndarray:
    """A real, content-dependent H×W {0,1} mask: the dark disc below the index bar."""
    mask = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) < 100).astype(np.uint8)
    mask[:10] = 0
    return mask


def run_through_sinks(path: Path, out: Path):
    """Read ``path`` with a real source, mask and render each frame, write all four sinks."""
    source = open_source(str(path))
    sinks = open_sinks(
        source.info,
        output=out / "out.mp4",
        mask_dir=out / "masks",
        mask_video=out / "masks.mkv",
        csv_path=out / "frames.csv",
    )
    stop = threading.Event()
    source.start(stop)
    frames = []
    while (frame := source.queue.get(stop, timeout=20)) is not EOS:
        frame.mask = lesion_mask(frame.image)
        frame.rendered = frame.image.copy()
        frame.rendered[frame.mask > 0] = (0, 255, 0)
        frame.timings["infer"] = 1.5
        for sink in sinks:
            sink.write(frame)
        frames.append(frame)
    for sink in sinks:
        sink.close()
        sink.close()  # closing twice is safe
    assert source.join(5) and source.error is None
    return source, sinks, frames


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "kind",
    ["cfr", "vfr", "bframes+audio", "odd-size", "mpegts+audio"],
    ids=lambda k: k.replace("+", "-"),
)
def test_file_in_gives_complete_outputs_with_the_input_timing(tmp_path, kind):
    # given a real clip of one kind
    clip = {
        "cfr": lambda: write_clip(tmp_path / "in.mp4", frames=30),
        "vfr": lambda: write_clip(tmp_path / "in.mp4", pts=vfr_pts(30)),
        "bframes+audio": lambda: write_clip(tmp_path / "in.mp4", frames=30, bframes=2, audio=True),
        # MPEG-TS: 90 kHz clock, first frame not at 0, ADTS AAC
        "mpegts+audio": lambda: write_clip(tmp_path / "in.ts", frames=30, audio=True),
        "odd-size": lambda: write_clip(
            tmp_path / "in.mkv", frames=30, size_wh=(161, 121), codec="ffv1"
        ),
    }[kind]()
    out = tmp_path / "out"
    out.mkdir()
    # when it goes through source → mask → every sink
    _, sinks, frames = run_through_sinks(clip.path, out)
    # then the video has exactly the input's frames at exactly the input's times
    assert len(frames) == clip.frame_count == 30
    video = probe(out / "out.mp4")
    assert video.codec == "h264" and video.pix_fmt == "yuv420p"
    assert video.pts_seconds == clip.pts_seconds
    decoded = decode_video(out / "out.mp4")
    assert [read_index(img) for _, img in decoded] == list(range(30))
    assert [p for p, _ in decoded] == list(video.video_pts)
    # a VFR input stays VFR
    durations = {b - a for a, b in zip(video.pts_seconds, video.pts_seconds[1:], strict=False)}
    assert (len(durations) > 2) == (kind == "vfr")
    # audio is copied packet for packet
    if clip.audio:
        source_audio = probe(clip.path)
        assert video.audio_codec == "aac"
        assert video.audio_packets == source_audio.audio_packets > 0
        assert video.audio_seconds == source_audio.audio_seconds
    # odd sizes are padded for yuv420p, and the user is told
    w, h = clip.size_wh
    assert video.size_wh == (w + w % 2, h + h % 2)
    assert any("padded" in note for note in sinks[0].warnings) == (w % 2 == 1)
    # one 0/255 PNG per frame at the frame's size, equal to the mask given
    pngs = sorted((out / "masks").glob("frame_*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(30)]
    for frame, png in zip(frames, pngs, strict=True):
        saved = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert saved.shape == (h, w) and set(np.unique(saved)) <= {0, 255}
        assert np.array_equal(saved > 0, frame.mask > 0)
    # the mask video is lossless grey at the frame size, one frame per input frame
    mask_video = decode_video(out / "masks.mkv", fmt="gray")
    assert probe(out / "masks.mkv").codec == "ffv1"
    assert len(mask_video) == 30
    for frame, (_, img) in zip(frames, mask_video, strict=True):
        assert np.array_equal(img, frame.mask * 255)
    # the CSV has a row per frame with the mask's numbers and the stage times
    rows = read_csv(out / "frames.csv")
    assert [int(r["index"]) for r in rows] == list(range(30))
    for frame, row in zip(frames, rows, strict=True):
        assert float(row["pts_s"]) == pytest.approx(float(frame.pts * frame.time_base), abs=1e-6)
        assert int(row["area_px"]) == int(frame.mask.sum())
        assert float(row["area_frac"]) == pytest.approx(frame.mask.mean(), abs=1e-6)
        assert float(row["ms_infer"]) == 1.5 and float(row["ms_decode"]) >= 0
        assert row["ms_capture"] == ""


@pytest.mark.timeout(60)
def test_csv_box_and_centroid_of_known_masks(tmp_path):
    # given a rectangle and an empty mask
    mask = np.zeros((50, 80), np.uint8)
    mask[10:20, 30:70] = 1
    # then the numbers are those of the rectangle, and empty for no lesion
    assert lesion_stats(mask) == [400, "0.100000", 30, 10, 40, 10, "49.50", "14.50"]
    assert lesion_stats(np.zeros((4, 4), np.uint8)) == [0, "0.000000", "", "", "", "", "", ""]


def _frame(i: int, pts: int | None, capture_time: float, tb=Fraction(1, 12800)) -> Frame:
    image = synthetic_frame(i)
    return Frame(
        image=image,
        index=i,
        pts=pts,
        time_base=tb,
        capture_time=capture_time,
        mask=lesion_mask(image),
    )


@pytest.mark.timeout(60)
def test_camera_frames_get_timestamps_from_capture_times(tmp_path):
    # given live frames without PTS, captured at uneven times, two at the same instant
    info = SourceInfo("camera:0", (160, 120), 30.0, Fraction(1, 1000), live=True)
    times = [100.0, 100.033, 100.1, 100.1, 100.2]
    sink, csv_sink = VideoSink(tmp_path / "cam.mp4"), CsvSink(tmp_path / "cam.csv")
    for s in (sink, csv_sink):
        s.open(info)
    # when written
    for i, t in enumerate(times):
        frame = _frame(i, None, t, tb=info.time_base)
        sink.write(frame)
        csv_sink.write(frame)
    sink.close()
    csv_sink.close()
    # then the file's times follow the capture times, strictly increasing, and nothing is lost
    seconds = [float(s) for s in probe(tmp_path / "cam.mp4").pts_seconds]
    assert seconds == pytest.approx([0.0, 0.033, 0.1, 0.101, 0.2], abs=1e-6)
    assert any("moved one tick later" in note for note in sink.warnings)
    assert [float(r["pts_s"]) for r in read_csv(tmp_path / "cam.csv")] == pytest.approx(
        [0.0, 0.033, 0.1, 0.1, 0.2], abs=1e-6
    )


def test_pts_clock_rescales_and_never_goes_backwards():
    clock = PtsClock(Fraction(1, 1000))
    assert clock(_frame(0, 512, 0.0)) == 40  # 512/12800 s = 40 ms
    assert clock(_frame(1, 512, 0.0)) == 41
    assert clock(_frame(2, 1280, 0.0)) == 100
    assert clock.retimed == 1


KILLER = """
import os, signal, sys, time
from fractions import Fraction
from media import synthetic_frame
from stream.frame import Frame, SourceInfo
from stream.sinks import VideoSink
info = SourceInfo("file:x", (160, 120), 25.0, Fraction(1, 12800))
sink = VideoSink(sys.argv[1])
sink.open(info)
for i in range(int(sys.argv[2])):
    sink.write(Frame(image=synthetic_frame(i), index=i, pts=i * 512, time_base=info.time_base,
                     capture_time=time.perf_counter()))
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.timeout(120)
def test_mp4_cut_short_by_sigkill_plays_up_to_its_last_fragment(tmp_path):
    # given a process that writes 62 frames (25 fps, a keyframe each second) and is killed
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    target = tmp_path / "killed.mp4"
    result = subprocess.run(
        [sys.executable, "-c", KILLER, str(target), "62"], env=env, timeout=60, capture_output=True
    )
    assert result.returncode == -signal.SIGKILL
    # then the two complete one-second fragments play, in order, and our source reads them
    assert [kind for kind, _, _ in mp4_boxes(target)].count("moof") >= 2
    decoded = decode_video(target)
    assert [read_index(img) for _, img in decoded] == list(range(50))
    assert open_source(str(target)).info.size_wh == (160, 120)


@pytest.mark.timeout(60)
def test_close_is_idempotent_and_write_after_close_is_refused(tmp_path):
    info = SourceInfo("file:x", (160, 120), 25.0, Fraction(1, 12800))
    for sink in (
        VideoSink(tmp_path / "a.mp4"),
        MaskVideoSink(tmp_path / "a.mkv"),
        MaskDirSink(tmp_path / "m"),
        CsvSink(tmp_path / "a.csv"),
    ):
        never_opened = type(sink)(sink.path)
        never_opened.close()  # nothing to do, and no file is made
        assert not sink.path.exists()
        sink.open(info)
        sink.write(_frame(0, 0, 0.0))
        sink.close()
        sink.close()
        assert sink.written == 1
        with pytest.raises(RuntimeError):
            sink.write(_frame(1, 512, 0.0))
    assert len(decode_video(tmp_path / "a.mp4")) == 1
    assert len(decode_video(tmp_path / "a.mkv")) == 1


@pytest.mark.timeout(60)
def test_bad_output_paths_fail_at_open_with_one_line(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=2)
    info = open_source(str(clip.path)).info
    link = tmp_path / "link.mp4"
    link.symlink_to(clip.path)
    cases = [
        (VideoSink(tmp_path / "missing" / "o.mp4"), "directory"),
        (VideoSink(clip.path), "is the input file"),
        (VideoSink(link), "is the input file"),
        (VideoSink(tmp_path), "is a directory"),
        (CsvSink(tmp_path / "missing" / "f.csv"), "does not exist"),
        (MaskVideoSink(tmp_path / "missing" / "m.mkv"), "does not exist"),
        (MaskDirSink(tmp_path / "missing" / "deeper"), "does not exist"),
        (MaskDirSink(clip.path), "not a directory"),
    ]
    for sink, expected in cases:
        with pytest.raises(SinkError) as error:
            sink.open(info)
        assert expected in str(error.value) and "\n" not in str(error.value)
        sink.close()
    assert probe(clip.path).video_pts == clip.pts  # the input is untouched


@pytest.mark.timeout(60)
def test_read_only_directory_fails_at_open(tmp_path):
    # given a directory without write permission and a process that respects it
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    code = f"""
from fractions import Fraction
from stream.errors import SinkError
from stream.frame import SourceInfo
from stream.sinks import open_sinks
info = SourceInfo("file:x", (160, 120), 25.0, Fraction(1, 12800))
for kw in ({{"output": {str(read_only / "o.mp4")!r}}}, {{"mask_dir": {str(read_only / "m")!r}}},
           {{"csv_path": {str(read_only / "f.csv")!r}}}):
    try:
        open_sinks(info, **kw)
    except SinkError as exc:
        print("error:", exc)
"""
    # when each sink opens there
    result = run_python_unprivileged(code)
    # then each says so in one line, and nothing is created
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert all("read-only" in line and str(read_only) in line for line in lines)
    assert list(read_only.iterdir()) == []


@pytest.mark.timeout(60)
def test_failed_start_leaves_no_empty_outputs(tmp_path):
    info = SourceInfo("file:x", (160, 120), 25.0, Fraction(1, 12800))
    with pytest.raises(SinkError, match="does not exist"):
        open_sinks(
            info,
            output=tmp_path / "o.mp4",
            mask_dir=tmp_path / "m",
            csv_path=tmp_path / "missing" / "f.csv",
        )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkError, match="named for two outputs"):
        open_sinks(info, output=tmp_path / "same", mask_video=tmp_path / "same")


def _full_disk_link(tmp_path: Path, name: str) -> Path:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    link = tmp_path / name
    link.symlink_to("/dev/full")  # every write there fails with ENOSPC
    return link


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make", [VideoSink, MaskVideoSink, CsvSink], ids=lambda c: c.__name__)
def test_disk_full_is_a_sink_error_naming_the_file(tmp_path, make):
    # given an output on a full disk
    target = _full_disk_link(tmp_path, "out.bin")
    sink = make(target)
    info = SourceInfo("file:x", (160, 120), 25.0, Fraction(1, 12800))
    # when frames are written and the file closed
    with pytest.raises(SinkError) as error:
        sink.open(info)
        for i in range(60):
            sink.write(_frame(i, i * 512, 0.0))
        sink.close()
    # then one line names the file, the cause and that the output is incomplete
    message = str(error.value)
    assert str(target) in message and "disk full" in message and "incomplete" in message
    assert "\n" not in message
    sink.close()  # still safe


@pytest.mark.timeout(60)
def test_disk_full_in_the_mask_directory_names_the_png(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    _full_disk_link(masks, "frame_000001.png")
    sink = MaskDirSink(masks)
    sink.open(SourceInfo("file:x", (160, 120), 25.0, Fraction(1, 12800)))
    sink.write(_frame(0, 0, 0.0))
    with pytest.raises(SinkError, match=r"frame_000001\.png: disk full"):
        sink.write(_frame(1, 512, 0.0))
    with pytest.raises(SinkError):
        sink.write(_frame(2, 1024, 0.0))  # a failed sink keeps failing
    sink.close()
    assert (masks / "frame_000000.png").is_file()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "codec", "copied"),
    [("pcm.mkv", "pcm_s16le", True), ("ulaw.mov", "pcm_mulaw", False)],
)
def test_audio_is_copied_when_mp4_can_hold_it_and_dropped_with_a_note_otherwise(
    tmp_path, name, codec, copied
):
    # given a clip whose audio is PCM (MP4 holds it) or µ-law (MP4 cannot)
    clip = write_clip(tmp_path / name, frames=12, audio=True, audio_codec=codec)
    assert probe(clip.path).audio_codec == codec
    out = tmp_path / "out"
    out.mkdir()
    # when it is written to MP4
    _, sinks, frames = run_through_sinks(clip.path, out)
    # then the video is complete either way, and the audio is there or its absence explained
    result = probe(out / "out.mp4")
    assert result.pts_seconds == clip.pts_seconds
    assert (result.audio_codec == codec) == copied
    if copied:
        assert result.audio_packets == probe(clip.path).audio_packets
    else:
        assert any("written without audio" in note for note in sinks[0].warnings)


@pytest.mark.timeout(60)
def test_stopping_early_copies_audio_only_as_far_as_the_video(tmp_path):
    # given a 2 s clip with audio, of which only the first 10 frames (0.4 s) are written
    clip = write_clip(tmp_path / "in.mp4", frames=50, audio=True)
    source = open_source(str(clip.path))
    sink = VideoSink(tmp_path / "out.mp4")
    sink.open(source.info)
    stop = threading.Event()
    source.start(stop)
    for _ in range(10):
        sink.write(source.queue.get(stop, timeout=10))
    stop.set()
    assert source.join(5)
    sink.close()
    # then the audio ends about where the video does, not 1.6 s later
    result = probe(tmp_path / "out.mp4")
    assert len(result.video_pts) == 10
    last_audio_s = max(result.audio_seconds)
    assert 0.3 < last_audio_s < 0.4 + 0.5 + 0.07
