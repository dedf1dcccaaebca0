"""Signals: Ctrl-C finishes the frame in hand and closes the outputs; SIGKILL leaves a playable MP4.

Peers' failures each have a test here: Holoscan's recorder loses its index when the process
dies (our fragmented MP4 must play up to its last fragment after SIGKILL); a SIGINT segfault
with V4L2 sources (Ctrl-C in live mode must close camera and window and exit 130); a Roboflow
pipeline that cannot be stopped after a failed camera connect (Ctrl-C while a lost camera
waits to reconnect must end the run at once).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from support.media import probe, write_clip
from support.reliability import (
    REPO,
    csv_rows,
    demo_env,
    finish,
    playable_pts,
    start_demo,
    wait_for,
)

from stream.engines import build_engine
from stream.outputs import open_sinks
from stream.pipeline import Pipeline
from stream.sources import open_source
from stream.sources.camera import CameraSource


def open_files(pid: int) -> set[str]:
    """Paths a process holds open (its /proc fd links)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held.add(os.readlink(fd))
        except OSError:
            continue
    return held


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_on_a_file_finishes_the_frame_closes_every_output_and_exits_130(tmp_path):
    # given the demo writing every kind of output from a long clip with audio
    clip = write_clip(tmp_path / "exam.mp4", frames=60, size_wh=(96, 64), fps=5, audio=True)
    out = {"video": tmp_path / "o.mp4", "masks": tmp_path / "masks",
           "mask_video": tmp_path / "m.mkv", "csv": tmp_path / "o.csv"}
    proc = start_demo("--video", clip.path, "--output", out["video"], "--mask-dir", out["masks"],
                      "--mask-video", out["mask_video"], "--csv", out["csv"])
    # when Ctrl-C comes after a few frames
    wait_for(lambda: csv_rows(out["csv"]) >= 3, timeout=240, proc=proc, what="3 frames")
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    run = finish(proc, timeout=60)
    # then it stops soon with 130 and a summary of how far it got
    assert run.rc == 130, run.stderr
    assert time.perf_counter() - sent < 45
    assert not run.has_traceback and run.error_lines == []
    assert "interrupted" in run.stderr
    frames_in, frames_out = run.counts()
    assert 3 <= frames_out == frames_in < 60  # the frame in hand was finished, none lost
    # and every output is complete and closed, with the same frames and their timestamps
    assert playable_pts(out["video"]) == list(clip.pts[:frames_out])
    assert probe(out["video"]).audio_packets > 0
    assert len(probe(out["mask_video"]).video_pts) == frames_out
    assert csv_rows(out["csv"]) == frames_out
    assert len(list(out["masks"].glob("frame_*.png"))) == frames_out
    assert f"{out['video']} is incomplete: the first {frames_out} frames were" in run.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_mid_write_leaves_an_mp4_that_plays_up_to_its_last_fragment(tmp_path):
    # given the demo writing a clip with a keyframe, hence an MP4 fragment, every 2 frames
    clip = write_clip(tmp_path / "exam.mp4", frames=60, size_wh=(96, 64), fps=2)
    video, masks, table = tmp_path / "o.mp4", tmp_path / "m.mkv", tmp_path / "o.csv"
    proc = start_demo("--video", clip.path, "--output", video, "--mask-video", masks,
                      "--csv", table)
    # when it is killed outright after 5 frames went through every sink
    wait_for(lambda: csv_rows(table) >= 5, timeout=240, proc=proc, what="5 frames")
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # then the MP4 still has its index and plays, in order, up to its last whole fragment
    rows = csv_rows(table)
    pts = playable_pts(video)
    assert 4 <= len(pts) <= rows and pts == list(clip.pts[: len(pts)])
    assert open_source(str(video)).info.size_wh == (96, 64)  # and the demo itself can read it
    assert 1 <= len(playable_pts(masks)) <= rows  # the mask video too, up to its last cluster


def wait_for_torch(proc: subprocess.Popen) -> None:
    """Wait until ``proc`` is importing torch (its library is mapped): start-up is under way."""

    def importing_torch() -> bool:
        maps = Path(f"/proc/{proc.pid}/maps")
        return maps.exists() and "libtorch" in maps.read_text()

    wait_for(importing_torch, timeout=120, proc=proc, what="torch to load")


@pytest.fixture
def starting_demo(tmp_path):
    """A demo on a short clip that is importing torch: start-up is under way."""
    clip = write_clip(tmp_path / "exam.mp4", frames=30, size_wh=(96, 64))
    proc = start_demo("--video", clip.path, "--csv", tmp_path / "o.csv")
    try:
        wait_for_torch(proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_interrupted_cleanly(run) -> None:
    """Exit 130 with the one word "interrupted" and no traceback."""
    assert run.rc == 130, run.stderr
    assert not run.has_traceback and "interrupted" in run.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_during_start_up_is_one_word_and_exit_130(starting_demo):
    starting_demo.send_signal(signal.SIGINT)
    assert_interrupted_cleanly(finish(starting_demo, timeout=120))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_pressed_again_and_again_is_still_one_word_and_exit_130(starting_demo):
    # an impatient user: Ctrl-C every 50 ms from the moment torch loads until the demo is gone
    deadline = time.monotonic() + 120
    while starting_demo.poll() is None and time.monotonic() < deadline:
        starting_demo.send_signal(signal.SIGINT)
        time.sleep(0.05)
    assert_interrupted_cleanly(finish(starting_demo, timeout=10))


SWALLOWING_CHILD = """
import os, signal, sys, time
from stream import interrupts

interrupts.watch()  # as demo.py does, before anything heavy
try:  # an import fallback in C or Python that eats whatever it catches, Ctrl-C included
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
except BaseException:
    pass
from stream.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(300)
def test_ctrl_c_that_a_library_swallowed_at_start_up_still_stops_the_run(tmp_path):
    # given a Ctrl-C pressed while importing, which the importing code caught and dropped
    clip = write_clip(tmp_path / "exam.mp4", frames=10, size_wh=(96, 64))
    csv = tmp_path / "o.csv"
    proc = subprocess.Popen(
        [sys.executable, "-c", SWALLOWING_CHILD, "--video", str(clip.path), "--csv", str(csv),
         "--no-display"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=demo_env(), cwd=REPO)
    # when the demo then starts up
    run = finish(proc, timeout=240)
    # then it stops before writing anything: one word, exit 130
    assert_interrupted_cleanly(run)
    assert not csv.exists()


LIVE_CHILD = """
import json, os, sys
import cv2, torch
from stream.engines import build_engine
from stream.pipeline import Pipeline
from stream.outputs import open_sinks
from stream.sources.camera import CameraSource
from stream.outputs.window import WindowSink

clip, out = sys.argv[1], sys.argv[2]
camera = CameraSource(clip, backoff_s=0.05)  # plays the clip again and again, like a live feed
window = WindowSink()
engine = build_engine(device=torch.device("cpu"), weights=None, threads=1)
sinks = open_sinks(camera.info, output=f"{out}/live.mp4", csv_path=f"{out}/live.csv")
pipeline = Pipeline(camera, engine, sinks=sinks, window=window)
flowing = []

def progress(stats):
    if stats.frames_out >= 2 and not flowing:
        flowing.append(True)
        print("FLOWING", flush=True)

summary = pipeline.run(progress=progress)
cv2.waitKey(100)
try:
    visible = cv2.getWindowProperty(window.title, cv2.WND_PROP_VISIBLE)
except cv2.error:
    visible = -1.0
held = []
for fd in os.listdir("/proc/self/fd"):
    try:
        held.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
print(json.dumps({"interrupted": summary.interrupted, "frames_out": summary.frames_out,
                  "written": sinks[0].written, "window_visible": visible, "held": held}),
      flush=True)
sys.exit(130 if summary.interrupted else 0)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_in_live_mode_closes_camera_and_window_cleanly(tmp_path, xvfb):  # noqa: F811
    # given a live run: a camera (OpenCV playing a clip in a loop), a window, and outputs
    clip = write_clip(tmp_path / "cam.mp4", frames=8, size_wh=(96, 64))
    env = demo_env(DISPLAY=xvfb)
    proc = subprocess.Popen([sys.executable, "-c", LIVE_CHILD, str(clip.path), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    try:
        # when Ctrl-C comes while frames flow and the camera is held open
        assert proc.stdout.readline().strip() == "FLOWING", proc.stderr.read()[-3000:]
        # (the looping camera closes and reopens its clip at every end: look until it is open)
        wait_for(lambda: str(clip.path) in open_files(proc.pid), timeout=30, proc=proc,
                 what="the camera to hold its clip open")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    # then it exits 130 (no segfault), with camera, window and outputs closed
    assert proc.returncode == 130, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["interrupted"] and report["frames_out"] >= 2
    assert str(clip.path) not in report["held"]
    assert report["window_visible"] < 1
    assert str(tmp_path / "live.mp4") not in report["held"]
    assert len(playable_pts(tmp_path / "live.mp4")) == report["written"]
    assert csv_rows(tmp_path / "live.csv") == report["written"]


@pytest.mark.timeout(120)
def test_ctrl_c_while_a_lost_camera_waits_to_reconnect_ends_the_run_at_once(tmp_path):
    # given a camera that is lost and waits 30 s before each reconnect attempt
    clip = write_clip(tmp_path / "cam.mp4", frames=4, size_wh=(96, 64))
    camera = CameraSource(str(clip.path), max_reconnects=5, backoff_s=30.0)
    clip.path.unlink()
    engine = build_engine(device=torch.device("cpu"), weights=None, threads=1)
    sinks = open_sinks(camera.info, output=tmp_path / "o.mp4")
    pipeline = Pipeline(camera, engine, sinks=sinks)
    sent = []

    def interrupt_while_reconnecting() -> None:
        while not (camera.status or "").startswith("camera lost, reconnecting"):
            time.sleep(0.01)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, taken by the pipeline's handler

    threading.Thread(target=interrupt_while_reconnecting, daemon=True).start()
    # when Ctrl-C comes during the backoff
    summary = pipeline.run()
    # then the run ends at once, as interrupted, with the camera released and output closed
    assert sent and time.perf_counter() - sent[0] < 5
    assert summary.interrupted
    assert camera.join(0) and camera.error is None
    assert len(playable_pts(tmp_path / "o.mp4")) == sinks[0].written >= 1
