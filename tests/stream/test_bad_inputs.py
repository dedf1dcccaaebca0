"""Bad inputs through the real CLI: one clear error line, a non-zero exit, nothing half-written.

Unusable inputs, weights, outputs and flags must fail at start-up with exactly one ``error:``
line and no traceback (unless ``--debug``), leaving no output files behind. Inputs that are odd
but readable (pixel formats, rotation, damaged packets, 8K) must go through with every readable
frame, and what was lost is said. A camera that disappears and a disk that fills up end the run
with a clear message and closed outputs.
"""

import hashlib
import os
import subprocess
import sys
import time

import cv2
import pytest
import torch
from support.media import (
    corrupt,
    cut_before_moov,
    decode_video,
    probe,
    write_audio_only,
    write_clip,
    write_text_as_video,
)
from support.reliability import (
    ErrorWatch,
    can_mount,
    csv_rows,
    demo_env,
    playable_pts,
    run_cli,
    small_fs,
)

from slsnet import build_generator
from slsnet.checkpoint import FORMAT, VERSION, save_generator
from stream.engines import build_engine
from stream.errors import StageError
from stream.outputs import open_sinks
from stream.pipeline import Pipeline
from stream.sources.camera import CameraSource

SIZE_WH = (96, 64)


def free_camera_index() -> int:
    return next(i for i in range(40, 64) if not os.path.exists(f"/dev/video{i}"))


def assert_one_clean_error(run, expected: str) -> None:
    assert run.rc != 0, run.stderr
    assert len(run.error_lines) == 1, run.stderr
    assert expected in run.error_lines[0], run.stderr
    assert not run.has_traceback, run.stderr


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "ok.mp4", frames=3, size_wh=SIZE_WH)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A real SLSNet weights file and three broken ones."""
    folder = tmp_path_factory.mktemp("weights")
    good = save_generator(build_generator(), folder / "good.pt")
    data = good.read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), folder / "plain_state_dict.pt")
    other = {"format": FORMAT, "version": VERSION, "config": {}, "meta": {},
             "state_dict": torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)).state_dict()}
    torch.save(other, folder / "other_architecture.pt")
    return folder


# ---- unusable inputs: one line at start-up, nothing left behind ---------------------------------

def _missing(d):
    return d / "nope.mp4"


def _directory(d):
    (d / "folder.mp4").mkdir()
    return d / "folder.mp4"


def _zero_bytes(d):
    (d / "empty.mp4").write_bytes(b"")
    return d / "empty.mp4"


def _moov_missing(d):
    whole = write_clip(d / "whole.mp4", frames=4, size_wh=SIZE_WH)
    return cut_before_moov(whole.path, d / "cut.mp4")


def _audio_only(d):
    return write_audio_only(d / "audio.mp4")


def _text(d):
    return write_text_as_video(d / "notes.mp4")


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_missing, "video file not found"),
        (_directory, "is a directory, not a video file"),
        (_zero_bytes, "is empty (0 bytes)"),
        (_moov_missing, "truncated MP4: its index ('moov' box) is missing"),
        (_audio_only, "has no video stream (it holds: audio aac)"),
        (_text, "is not a video file FFmpeg can read"),
    ],
    ids=["missing", "directory", "zero-bytes", "moov-missing", "audio-only", "text-as-mp4"],
)
def test_unusable_video_file_is_one_error_line_and_no_outputs(tmp_path, make, expected):
    # given an input that cannot be played, and outputs asked for
    path = make(tmp_path)
    outputs = [tmp_path / "out.mp4", tmp_path / "masks", tmp_path / "out.csv"]
    # when the demo runs on it
    run = run_cli("--video", path, "--output", outputs[0], "--mask-dir", outputs[1],
                  "--csv", outputs[2])
    # then one error line names the file and the problem, and no output was created
    assert_one_clean_error(run, expected)
    assert str(path) in run.error_lines[0]
    assert not any(p.exists() for p in outputs)


@pytest.mark.timeout(120)
def test_camera_that_does_not_exist_is_one_error_line(tmp_path):
    index = free_camera_index()
    run = run_cli("--camera", str(index), "--csv", tmp_path / "out.csv")
    assert_one_clean_error(run, f"cannot open camera {index}: tried V4L2")
    assert not (tmp_path / "out.csv").exists()
    assert run.seconds < 30  # a failed camera connect does not hang the program


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing.pt", "weights file not found"),
        ("truncated.pt", "(truncated or corrupt?)"),
        ("plain_state_dict.pt", "is not an SLSNet generator weights file"),
        ("other_architecture.pt", "does not match the SLSNet architecture"),
    ],
)
def test_bad_weights_are_one_error_line(tmp_path, clip, weights, name, expected):
    run = run_cli("--video", clip.path, "--weights", weights / name,
                  "--output", tmp_path / "out.mp4")
    assert_one_clean_error(run, expected)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.timeout(120)
def test_debug_shows_the_traceback_behind_the_error_line(tmp_path):
    run = run_cli("--video", tmp_path / "nope.mp4", "--debug")
    assert run.rc == 1
    assert run.has_traceback and "SourceError" in run.stderr
    assert run.error_lines == [f"error: video file not found: {tmp_path / 'nope.mp4'}"]


# ---- outputs ------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        (["--output", "{tmp}/no/such/dir/out.mp4"], "directory {tmp}/no/such/dir does not exist"),
        (["--mask-dir", "{tmp}/no/such/masks"], "directory {tmp}/no/such does not exist"),
        (["--output", "{tmp}"], "is a directory; give a file name"),
        (["--output", "{tmp}/a.mp4", "--mask-video", "{tmp}/a.mp4"], "named for two outputs"),
        # the first outputs open fine; the last one fails, and the first ones are removed again
        (["--output", "{tmp}/a.mp4", "--mask-dir", "{tmp}/m", "--csv", "{tmp}/none/a.csv"],
         "directory {tmp}/none does not exist"),
    ],
    ids=["missing-dir", "mask-dir-parent-missing", "dir-as-file", "same-path-twice",
         "late-failure"],
)
def test_unwritable_outputs_are_one_error_line_and_leave_nothing(tmp_path, clip, outputs,
                                                                 expected):
    work = tmp_path / "work"
    work.mkdir()
    argv = [a.format(tmp=work) for a in outputs]
    run = run_cli("--video", clip.path, *argv)
    assert_one_clean_error(run, expected.format(tmp=work))
    assert list(work.iterdir()) == []


@pytest.mark.timeout(120)
def test_output_in_a_read_only_directory(tmp_path, clip):
    with small_fs(tmp_path / "ro", read_only=True) as ro:
        run = run_cli("--video", clip.path, "--output", ro / "out.mp4")
        assert_one_clean_error(run, f"directory {ro} is read-only")
        assert list(ro.iterdir()) == []


@pytest.mark.timeout(120)
def test_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path):
    clip = write_clip(tmp_path / "exam.mp4", frames=3, size_wh=SIZE_WH)
    before = hashlib.sha256(clip.path.read_bytes()).hexdigest()
    for flag in ("--output", "--mask-video", "--csv"):
        # the same file, named another way
        run = run_cli("--video", clip.path, flag, tmp_path / "." / "exam.mp4")
        assert_one_clean_error(run, "is the input file; choose another name")
        assert hashlib.sha256(clip.path.read_bytes()).hexdigest() == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("argv", "expected", "rc"),
    [
        (["--camera", "0", "--video", "{clip}"], "not allowed with argument", 2),
        (["--video", "{clip}", "--batch", "0"], "must be at least 1", 2),
        (["--video", "{clip}", "--max-frames", "-3"], "must be at least 1", 2),
        (["--camera", "front"], "expected a camera index or /dev/videoN", 2),
        (["--video", "{clip}", "--device", "tpu"], "invalid choice: 'tpu'", 2),
        (["--video", "{clip}", "--precision", "fp16", "--device", "cpu"],
         "--precision fp16 needs a CUDA GPU", 1),
    ],
    ids=["camera-and-video", "batch-0", "negative-max-frames", "camera-name", "device-tpu",
         "fp16-on-cpu"],
)
def test_bad_flag_combinations_are_one_error_line(tmp_path, clip, argv, expected, rc):
    run = run_cli(*[a.format(clip=clip.path) for a in argv], "--csv", tmp_path / "o.csv")
    assert run.rc == rc
    assert_one_clean_error(run, expected)
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.timeout(120)
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_asked_for_on_a_machine_without_it(clip):
    run = run_cli("--video", clip.path, "--device", "cuda")
    assert_one_clean_error(run, "--device cuda: no CUDA GPU is available")


# ---- readable but unusual inputs: every frame through -------------------------------------------

@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("codec", "pix_fmt", "size_wh", "ext"),
    [
        ("ffv1", "gray", SIZE_WH, "mkv"),
        ("ffv1", "bgra", SIZE_WH, "mkv"),
        ("libx264", "yuv420p10le", SIZE_WH, "mp4"),
        ("ffv1", "gray16le", SIZE_WH, "mkv"),
        ("ffv1", "yuv444p16le", SIZE_WH, "mkv"),
        ("ffv1", "yuv420p", (97, 63), "mkv"),
    ],
    ids=["grey", "rgba", "10-bit", "grey-16-bit", "16-bit-colour", "odd-size"],
)
def test_unusual_pixel_formats_and_sizes_go_through_frame_for_frame(tmp_path, codec, pix_fmt,
                                                                    size_wh, ext):
    clip = write_clip(tmp_path / f"in.{ext}", frames=2, size_wh=size_wh, codec=codec,
                      pix_fmt=pix_fmt)
    assert clip.pix_fmt == pix_fmt
    run = run_cli("--video", clip.path, "--output", tmp_path / "o.mp4",
                  "--mask-video", tmp_path / "m.mkv")
    assert run.rc == 0, run.stderr
    assert run.counts() == (2, 2)
    video, masks = probe(tmp_path / "o.mp4"), probe(tmp_path / "m.mkv")
    assert video.pts_seconds == clip.pts_seconds
    w, h = size_wh
    assert video.size_wh == (w + w % 2, h + h % 2)  # H.264 yuv420p: padded to even sides
    assert masks.size_wh == size_wh and len(masks.video_pts) == 2
    if w % 2:
        assert any("padded to 98×64" in line for line in run.warnings)


@pytest.mark.timeout(120)
def test_rotation_metadata_is_applied_to_every_output(tmp_path):
    clip = write_clip(tmp_path / "phone.mp4", frames=2, size_wh=SIZE_WH, rotation=90)
    run = run_cli("--video", clip.path, "--output", tmp_path / "o.mp4",
                  "--mask-dir", tmp_path / "m")
    assert run.rc == 0, run.stderr
    assert any("rotated 90° counter-clockwise to 64×96" in line for line in run.warnings)
    assert probe(tmp_path / "o.mp4").size_wh == (64, 96)
    mask = cv2.imread(str(tmp_path / "m" / "frame_000000.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (96, 64)


@pytest.mark.timeout(180)
def test_corrupt_packets_are_skipped_counted_and_reported(tmp_path):
    # given 12 frames with random bytes over two places in the media data
    whole = write_clip(tmp_path / "ok.mp4", frames=12, size_wh=SIZE_WH, bframes=2, audio=True)
    bad = corrupt(whole.path, tmp_path / "bad.mp4", spots=2, length=300)
    # when processed
    run = run_cli("--video", bad, "--output", tmp_path / "o.mp4", "--csv", tmp_path / "o.csv")
    # then it succeeds with every readable frame, and says how many it could not read
    assert run.rc == 0, run.stderr
    frames_in, frames_out = run.counts()
    lost = [line for line in run.warnings if "unreadable frame(s) skipped" in line]
    assert len(lost) == 1, run.stderr
    unreadable = int(lost[0].split("bad.mp4: ")[1].split()[0])
    assert unreadable >= 1 and frames_in == frames_out == 12 - unreadable
    out = probe(tmp_path / "o.mp4")
    assert len(out.video_pts) == csv_rows(tmp_path / "o.csv") == frames_out
    assert set(out.pts_seconds) <= set(whole.pts_seconds)  # kept timestamps, none invented


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_8k_frame_goes_through(tmp_path):
    clip = write_clip(tmp_path / "8k.mp4", frames=1, size_wh=(7680, 4320))
    run = run_cli("--video", clip.path, "--mask-dir", tmp_path / "m", "--csv", tmp_path / "o.csv")
    assert run.rc == 0, run.stderr
    assert run.counts() == (1, 1)
    mask = cv2.imread(str(tmp_path / "m" / "frame_000000.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (4320, 7680)
    assert csv_rows(tmp_path / "o.csv") == 1


# ---- a camera that disappears, a disk that fills up ----------------------------------------------

@pytest.mark.timeout(120)
def test_camera_that_disappears_reconnects_with_backoff_then_gives_up_clearly(tmp_path):
    # given a "camera" (OpenCV reading a real clip) that cannot be reopened once it ends
    clip = write_clip(tmp_path / "cam.mp4", frames=6, size_wh=SIZE_WH)
    camera = CameraSource(str(clip.path), max_reconnects=3, backoff_s=0.1, max_backoff_s=0.2)
    clip.path.unlink()
    engine = build_engine(device=torch.device("cpu"), weights=None)
    sinks = open_sinks(camera.info, output=tmp_path / "o.mp4", csv_path=tmp_path / "o.csv")
    pipeline = Pipeline(camera, engine, sinks=sinks)
    # when it runs until the camera is gone
    start = time.perf_counter()
    watch = ErrorWatch(pipeline)
    with pytest.raises(StageError) as info:
        pipeline.run(handle_sigint=False)
    ended = time.perf_counter()
    # then it tried 3 times with growing waits, said so, and stopped promptly
    message = str(info.value)
    assert message.startswith(f"source camera:{clip.path} failed: camera {clip.path} stopped")
    assert "gave up after 3 reconnect attempts" in message and "\n" not in message
    assert ended - start >= 0.1 + 0.2 + 0.2
    assert watch.seconds_until(ended) < 5.0
    assert camera.join(0) and camera.status == "camera lost"
    # and the outputs are closed and complete up to the last frame processed
    written = sinks[0].written
    assert written >= 1 and csv_rows(tmp_path / "o.csv") == written
    assert len(decode_video(tmp_path / "o.mp4")) == written


@pytest.mark.timeout(180)
def test_disk_full_in_the_mask_directory_stops_with_one_line_and_complete_pngs(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=10, size_wh=SIZE_WH)
    with small_fs(tmp_path / "small", size_kb=12) as disk:
        run = run_cli("--video", clip.path, "--mask-dir", disk / "m", "--csv", tmp_path / "o.csv")
        assert_one_clean_error(run, "disk full (No space left on device)")
        assert "the mask directory is incomplete (masks for" in run.error_lines[0]
        saved = int(run.error_lines[0].split("masks for ")[1].split()[0])
        pngs = sorted((disk / "m").glob("*.png"))
        assert 1 <= len(pngs) == saved < 10
        for png in pngs:  # none half-written
            assert cv2.imread(str(png), cv2.IMREAD_UNCHANGED).shape == (64, 96)
        assert any(f"{disk / 'm'} is incomplete" in line for line in run.warnings)


@pytest.mark.timeout(180)
def test_disk_full_under_the_video_names_the_file_and_says_it_is_incomplete(tmp_path):
    # given 12 frames with a keyframe (a fragment) every 4, and room for about one fragment
    clip = write_clip(tmp_path / "in.mp4", frames=12, size_wh=(320, 240), fps=4)
    with small_fs(tmp_path / "small", size_kb=16) as disk:
        run = run_cli("--video", clip.path, "--output", disk / "o.mp4")
        assert_one_clean_error(run, f"cannot write {disk / 'o.mp4'}: disk full")
        assert "the file is incomplete" in run.error_lines[0]
        # what is there plays, in order, up to its last complete fragment
        pts = playable_pts(disk / "o.mp4")
        assert 1 <= len(pts) < 12 and pts == list(clip.pts[: len(pts)])


FSIZE_CHILD = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))
from stream.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(can_mount(), reason="the tmpfs tests above fill a real disk here")
def test_file_size_limit_instead_of_a_full_disk(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=8, size_wh=(320, 240), fps=4)
    done = subprocess.run([sys.executable, "-c", FSIZE_CHILD, "--video", str(clip.path),
                           "--output", str(tmp_path / "o.mp4"), "--no-display"],
                          capture_output=True, text=True, timeout=280, env=demo_env())
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "the file is incomplete" in errors[0]
    assert "Traceback" not in done.stderr
