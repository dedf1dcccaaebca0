"""Sink reliability on real files: crash safety, bad output paths, read-only places, full disks."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.media import (
    decode_video,
    mp4_boxes,
    probe,
    read_index,
    run_python_unprivileged,
    write_clip,
)
from test_sinks import INFO, _frame

from stream.errors import SinkError
from stream.outputs import CsvSink, MaskDirSink, MaskVideoSink, VideoSink, open_sinks
from stream.sources import open_source

REPO = Path(__file__).resolve().parents[3]

KILLER = """
import os, signal, sys, time
from fractions import Fraction
from support.media import synthetic_frame
from stream.frame import Frame, SourceInfo
from stream.outputs import VideoSink
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
def test_bad_output_paths_fail_at_open_with_one_line(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=2)
    with open_source(str(clip.path)) as source:
        info = source.info
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
from stream.outputs import open_sinks
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

    with pytest.raises(SinkError, match="does not exist"):
        open_sinks(
            INFO,
            output=tmp_path / "o.mp4",
            mask_dir=tmp_path / "m",
            csv_path=tmp_path / "missing" / "f.csv",
        )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkError, match="named for two outputs"):
        open_sinks(INFO, output=tmp_path / "same", mask_video=tmp_path / "same")


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

    # when frames are written and the file closed
    with pytest.raises(SinkError) as error:
        sink.open(INFO)
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
    sink.open(INFO)
    sink.write(_frame(0, 0, 0.0))
    with pytest.raises(SinkError, match=r"frame_000001\.png: disk full"):
        sink.write(_frame(1, 512, 0.0))
    with pytest.raises(SinkError):
        sink.write(_frame(2, 1024, 0.0))  # a failed sink keeps failing
    sink.close()
    assert (masks / "frame_000000.png").is_file()
