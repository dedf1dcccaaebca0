"""demo.py / python -m stream: flags, the sample-clip default, outputs, Ctrl-C and user errors."""

import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from support.media import probe, write_clip

from slsnet import build_generator
from slsnet.checkpoint import save_generator
from stream.cli import build_parser, main
from stream.sources import SAMPLE

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ("--camera", "--video", "--output", "--mask-dir", "--mask-video", "--csv", "--weights",
         "--device", "--no-display", "--max-frames", "--realtime", "--smooth", "--no-hud",
         "--precision", "--no-cuda-graph", "--batch", "--tta", "--debug")


def headless_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, cwd: Path, module: bool = False, timeout: float = 240):
    entry = ["-m", "stream"] if module else [str(ROOT / "demo.py")]
    command = [sys.executable, *entry]
    return subprocess.run([*command, "--threads", "1", *args], cwd=cwd, env=headless_env(),
                          capture_output=True, text=True, timeout=timeout)


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def random_weights(monkeypatch):
    """No default weights file anywhere: the engine falls back to random weights."""
    monkeypatch.setattr("stream.engines.base.find_default_weights", lambda: None)


@pytest.fixture
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in text, f"{flag} missing from --help"
    parser = build_parser()
    for action in parser._actions:  # every flag carries a help text
        assert action.help, f"{action.option_strings} has no help"


@pytest.mark.timeout(300)
def test_no_arguments_plays_the_sample_clip_headless(tmp_path):
    # given no DISPLAY and only --no-display --max-frames 10
    assert SAMPLE.is_file(), "the bundled sample clip is missing"
    done = run_cli("--no-display", "--max-frames", "10", cwd=tmp_path)
    # then it played the sample clip, processed 10 frames and printed the summary table
    assert done.returncode == 0, done.stderr
    assert "sample" in done.stderr and "summary" in done.stderr
    assert "frames in 10, out 10" in " ".join(done.stderr.split())
    assert "10/10" in done.stderr  # the progress bar's final state
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(300)
def test_python_dash_m_stream_writes_every_output(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=8)
    done = run_cli("--video", str(clip.path), "--output", "out.mp4", "--mask-dir", "masks",
                   "--mask-video", "masks.mkv", "--csv", "lesion.csv", "--no-display",
                   cwd=tmp_path, module=True)
    assert done.returncode == 0, done.stderr
    assert probe(tmp_path / "out.mp4").pts_seconds == clip.pts_seconds
    assert len(probe(tmp_path / "masks.mkv").video_pts) == 8
    assert len(list((tmp_path / "masks").glob("frame_*.png"))) == 8
    assert [int(r["index"]) for r in csv_rows(tmp_path / "lesion.csv")] == list(range(8))


@pytest.mark.timeout(300)
def test_ctrl_c_finishes_the_frame_closes_outputs_and_exits_130(tmp_path):
    # given a long clip being processed into a video and a CSV
    clip = write_clip(tmp_path / "in.mp4", frames=400)
    command = [sys.executable, str(ROOT / "demo.py"), "--threads", "1", "--video", str(clip.path),
               "--output", "out.mp4", "--csv", "lesion.csv", "--no-display"]
    demo = subprocess.Popen(command, cwd=tmp_path, env=headless_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        table = tmp_path / "lesion.csv"
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and demo.poll() is None:
            if table.exists() and len(csv_rows(table)) >= 3:
                break
            time.sleep(0.2)
        # when Ctrl-C arrives
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    # then: exit 130, a summary, and outputs that agree with each other and are complete files
    assert demo.returncode == 130, out
    assert "summary" in out and "interrupted" in out and "Traceback" not in out
    rows = csv_rows(table)
    assert 3 <= len(rows) < 400
    assert len(probe(tmp_path / "out.mp4").video_pts) == len(rows)
    assert f"out {len(rows)}," in " ".join(out.split())


def test_no_display_without_outputs_is_a_clear_error(tmp_path, capsys, no_display):
    clip = write_clip(tmp_path / "in.mp4", frames=2)
    assert main(["--video", str(clip.path)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "error: no display (DISPLAY is not set); use --no-display, or give an output such as "
        "--output or --csv")
    assert "Traceback" not in err


@pytest.mark.timeout(120)
def test_no_display_with_an_output_continues_headless(tmp_path, capsys, no_display,
                                                       random_weights):
    clip = write_clip(tmp_path / "in.mp4", frames=4)
    table = tmp_path / "t.csv"
    assert main(["--video", str(clip.path), "--csv", str(table), "--threads", "1"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no display (DISPLAY is not set); continuing headless" in err
    assert "UNTRAINED WEIGHTS" in err  # random weights are announced loudly
    assert len(csv_rows(table)) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--video", "{tmp}/missing.mp4"], "missing.mp4"),
        (["--video", "{clip}", "--weights", "{tmp}/not_weights.pt"], "not_weights.pt"),
        (["--video", "{clip}", "--output", "{tmp}/no/such/dir/out.mp4"], "does not exist"),
        (["--video", "{clip}", "--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA"),
        (["--video", "{clip}", "--csv", "{clip}"], "input file"),
    ],
)
def test_user_mistakes_are_one_error_line(tmp_path, capsys, args, message):
    clip = write_clip(tmp_path / "clip.mp4", frames=2)
    (tmp_path / "not_weights.pt").write_text("hello")
    argv = [a.format(tmp=tmp_path, clip=clip.path) for a in args] + ["--no-display"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not any("Traceback" in line for line in err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_is_one_error_line(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", frames=2)
    assert main(["--video", str(clip.path), "--device", "cuda", "--no-display"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: --device cuda: no CUDA GPU is available (use --device cpu or auto)")


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--video", str(tmp_path / "missing.mp4"), "--no-display", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: " in err


@pytest.mark.parametrize("args", [["--camera", "0", "--video", "x.mp4"], ["--batch", "0"],
                                  ["--smooth", "bogus"], ["--camera", "front"]])
def test_bad_flags_exit_2_with_usage(capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_trained_weights_are_used_without_warning(tmp_path, capsys):
    # given a weights file named with --weights, and flags the CPU accepts
    weights = save_generator(build_generator().eval(), tmp_path / "g.pt")
    clip = write_clip(tmp_path / "clip.mp4", frames=3)
    table = tmp_path / "t.csv"
    argv = ["--video", str(clip.path), "--weights", str(weights), "--csv", str(table),
            "--no-display", "--no-hud", "--batch", "2", "--no-cuda-graph", "--smooth", "off",
            "--precision", "fp32", "--device", "cpu", "--threads", "1"]
    # when / then
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "UNTRAINED" not in err and "cpu fp32" in err
    assert len(csv_rows(table)) == 3


@pytest.mark.timeout(120)
def test_tta_runs_every_frame_through_the_mirror_mean(tmp_path, capsys, random_weights):
    # given a clip
    clip = write_clip(tmp_path / "clip.mp4", frames=3)
    table = tmp_path / "t.csv"
    # when it is segmented with --tta
    assert main(["--video", str(clip.path), "--csv", str(table), "--no-display", "--tta",
                 "--smooth", "off", "--runtime", "torch", "--threads", "1"]) == 0
    # then the start-up line names the mirror mean, and every frame was measured
    assert "mirror mean of 4" in " ".join(capsys.readouterr().err.split())
    assert len(csv_rows(table)) == 3


@pytest.mark.timeout(180)
def test_default_smoothing_is_flow_on_a_file_and_follows_the_network_time_live(
        tmp_path, capsys, random_weights):
    clip = write_clip(tmp_path / "in.mp4", frames=6)
    table = tmp_path / "t.csv"
    base = ["--video", str(clip.path), "--csv", str(table), "--no-display", "--threads", "1"]
    # a file: every frame through the network, flow-smoothed
    assert main(base) == 0
    assert "smoothing flow (auto)" in " ".join(capsys.readouterr().err.split())
    assert len(csv_rows(table)) == 6
    # the same file played in real time is a live source: the network is timed first, and
    # runs on every frame if it keeps up, else on keyframes, on a thread of its own that must
    # end with the run
    before = {t.name for t in threading.enumerate()}
    assert main([*base, "--realtime"]) == 0
    said = re.search(r"smoothing (\w+) \(auto: network (\d+) ms a frame ([≤>]) (\d+) ms that "
                     r"([\d.]+) fps allows\)", " ".join(capsys.readouterr().err.split()))
    assert said, "the start-up line says what auto chose and why"
    mode, _, sign, budget, fps = said.groups()
    assert float(fps) == 25 and int(budget) == round(0.8 * 1000 / 25 - 3)
    assert (mode == "flow") == (sign == "≤")
    assert "keyframe-network" not in {t.name for t in threading.enumerate()} - before
