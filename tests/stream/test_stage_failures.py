"""A failure in any stage stops the whole pipeline within seconds, names the stage, closes outputs.

Failures are injected with the documented hook ``SLSNET_FAIL_STAGE=<stage>@<frame>`` (see
:mod:`stream.faults`) into the real pipeline: real decoding, the real CPU engine, real sinks.
The clip is longer than the source queue, so the capture thread is blocked on a full lossless
queue when the failure comes: the case where supervision's ``process_video`` deadlocks.
"""

import ast
import threading
import time
from pathlib import Path

import cv2
import pytest
import torch
from support.media import probe, write_clip
from support.reliability import ErrorWatch, csv_rows, demo_env, finish, playable_pts, start_demo

from stream.engines import build_engine
from stream.errors import StageError
from stream.faults import FAIL_ENV, Fault
from stream.outputs import open_sinks
from stream.pipeline import Pipeline
from stream.sources import open_source

FRAMES = 40  # > source queue (8) + writer queue (8): the decoder is blocked when the failure comes
FAIL_AT = 2
STAGES = ["source", "engine", "smoothing", "render",
          "sink video", "sink mask dir", "sink mask video", "sink csv"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "long.mp4", frames=FRAMES,
                      size_wh=(96, 64))


@pytest.fixture(scope="module")
def engine():
    return build_engine(device=torch.device("cpu"), weights=None, threads=1)


def pipeline_threads() -> list[str]:
    names = ("processing", "writer", "capture ")
    return [t.name for t in threading.enumerate() if t.is_alive() and t.name.startswith(names)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stage", STAGES)
def test_a_failure_in_any_stage_stops_everything_promptly(tmp_path, monkeypatch, clip, engine,
                                                         stage):
    # given the real pipeline on a clip longer than its queues, with every kind of output
    fault = Fault(stage, FAIL_AT)  # what SLSNET_FAIL_STAGE={stage}@{FAIL_AT} makes the CLI pass
    source = open_source(str(clip.path))
    sinks = open_sinks(source.info, output=tmp_path / "o.mp4", mask_dir=tmp_path / "masks",
                       mask_video=tmp_path / "m.mkv", csv_path=tmp_path / "o.csv")
    pipeline = Pipeline(source, engine, sinks=sinks, fault=fault)
    # when the stage fails at frame 2
    watch = ErrorWatch(pipeline)
    with pytest.raises(StageError) as info:
        pipeline.run(handle_sigint=False)
    returned = time.perf_counter()
    # then the error names the stage, in one line
    message = str(info.value)
    name = f"source {source.info.name}" if stage == "source" else stage
    assert message == f"{name} failed: injected failure ({FAIL_ENV}={stage}@{FAIL_AT})"
    # and everything stopped within a few seconds of the failure, the decoder included
    assert watch.seconds_until(returned) < 5.0
    assert source.join(0) and pipeline_threads() == []
    if stage != "source":  # the decoder had filled its queue and was blocked on it, then stopped
        assert FAIL_AT + 8 <= source.stats()["decoded"] < FRAMES
    summary = info.value.summary
    assert summary is not None and summary.frames_out <= FAIL_AT < FRAMES
    # and every output is closed and readable up to the frames written before the failure
    by_name = {sink.name: sink for sink in sinks}
    assert playable_pts(tmp_path / "o.mp4") == list(clip.pts[: by_name["video"].written])
    assert len(probe(tmp_path / "m.mkv").video_pts) == by_name["mask video"].written
    assert csv_rows(tmp_path / "o.csv") == by_name["csv"].written
    pngs = sorted((tmp_path / "masks").glob("*.png"))
    assert len(pngs) == by_name["mask dir"].written
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape == (64, 96) for p in pngs)
    # (sinks before a failing sink got the failing frame too: they are written in turn)
    assert all(sink.written <= FAIL_AT + 1 for sink in sinks)


@pytest.mark.timeout(120)
def test_the_hook_is_off_unless_set(tmp_path, monkeypatch, clip, engine):
    monkeypatch.delenv(FAIL_ENV, raising=False)
    source = open_source(str(clip.path))
    summary = Pipeline(source, engine, max_frames=3).run(handle_sigint=False)
    assert summary.frames_out == 3


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_demo_process_ends_with_the_stage_named_and_outputs_marked_incomplete(tmp_path,
                                                                                  clip):
    # given the real program, whose engine fails on frame 2
    proc = start_demo("--video", clip.path, "--output", tmp_path / "o.mp4",
                      "--csv", tmp_path / "o.csv", env=demo_env(**{FAIL_ENV: "engine@2"}))
    # when it runs
    run = finish(proc, timeout=280)
    # then it exits 1 with one line naming the stage, no traceback, and says what is incomplete
    assert run.rc == 1, run.stderr
    assert run.error_lines == [f"error: engine failed: injected failure ({FAIL_ENV}=engine@2)"]
    assert not run.has_traceback
    assert any(f"{tmp_path / 'o.mp4'} is incomplete: the first 2 frames were" in w
               for w in run.warnings), run.stderr
    assert run.counts()[1] == 2
    assert playable_pts(tmp_path / "o.mp4") == list(clip.pts[:2])


def blocking_calls_without_timeout(source: str) -> list[str]:
    """Thread joins, waits and frame-queue gets in ``source`` that could block forever."""
    tree = ast.parse(source)
    threads = {ast.unparse(t) for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Call) and ast.unparse(node.value.func)
               in ("threading.Thread", "Thread") for t in node.targets}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver, name = ast.unparse(node.func.value), node.func.attr
        has_timeout = bool(node.args) or any(k.arg == "timeout" for k in node.keywords)
        thread = receiver in threads or "thread" in receiver.lower()
        frame_queue = receiver.endswith(("queue", "_q")) and name == "get"
        if not has_timeout and ((name == "join" and thread) or name == "wait"):
            found.append(f"line {node.lineno}: {receiver}.{name}()")
        if frame_queue and not any(k.arg == "timeout" for k in node.keywords):
            found.append(f"line {node.lineno}: {receiver}.get() without a timeout")
    return found


@pytest.mark.timeout(60)
def test_no_thread_join_wait_or_queue_get_in_the_stream_package_can_block_forever():
    # the guard itself catches what it is for
    assert blocking_calls_without_timeout("t = threading.Thread(target=f)\nt.join()\n")
    assert blocking_calls_without_timeout("self._writer_q.get(self._stop)\n")
    assert not blocking_calls_without_timeout("q.get(stop, timeout=0.1)\nt.join(5)\n")
    # and the package has none
    package = Path(__file__).resolve().parents[2] / "stream"
    found = {str(p.relative_to(package)): blocking_calls_without_timeout(p.read_text())
             for p in sorted(package.rglob("*.py"))}
    assert {name: calls for name, calls in found.items() if calls} == {}
