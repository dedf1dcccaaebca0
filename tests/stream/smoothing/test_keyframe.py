"""Keyframe propagation: the network every k-th frame, on the pipeline's thread or its own."""

import time

import numpy as np
import pytest
import torch
from support.clips import S, make_clip, new_frame, run

from stream.bench.synth import sweep, synthetic_still
from stream.bench.temporal_metrics import iou
from stream.engines.thread import EngineThread
from stream.smoothing import build_smoother


def test_keyframe_runs_the_network_every_kth_frame_and_propagates_between():
    clip = make_clip("slow_pan", seconds=1.0, seed=6)
    frames = run(build_smoother("keyframe", interval=4), clip)
    asked = [f.notes["keyframe"] for f in frames]
    assert asked == [i % 4 == 0 for i in range(len(clip))]
    assert all(
        f.notes["keyframe_interval"] == 4 and f.notes["smooth"] == "keyframe" for f in frames
    )
    # propagated frames have a probability map and a mask of their own that follows the lesion
    between = [(f, t) for f, (_, t, _) in zip(frames, clip, strict=True) if not f.notes["keyframe"]]
    assert all(f.prob.shape == (S, S) and f.mask.shape == (120, 160) for f, _ in between)
    assert np.mean([iou(f.mask, t) for f, t in between]) > 0.9


def test_keyframe_interval_follows_the_network_time():
    clip = make_clip("static", seconds=0.5, seed=7)
    slow, fast = build_smoother("keyframe", fps=30), build_smoother("keyframe", fps=30)
    run(slow, clip, net_ms=100.0)  # a 100 ms network against a 33 ms frame interval
    run(fast, clip, net_ms=5.0)
    assert 4 <= slow.interval <= 8  # ≈ 100 ms / (0.8 × 33 ms − propagation time)
    assert fast.interval == 1
    # and the interval never goes past its ceiling
    capped = build_smoother("keyframe", fps=30, max_interval=3)
    run(capped, clip, net_ms=1000.0)
    assert capped.interval == 3
    # even when propagation alone takes longer than a frame (an overloaded machine)
    capped.prop_ms = 1000.0
    assert capped.interval == 3


def test_one_keyframe_that_contradicts_the_mask_does_not_make_it_blink():
    # given a still scene, the network every 2nd frame, and a confident island at the corner that
    # the network drops at one keyframe (frame 2) and then for good (frames 6 and 8)
    clip = make_clip("static", seconds=0.34, seed=8)
    island = [0.99, 0, 0.01, 0, 0.99, 0, 0.01, 0, 0.01, 0]
    probs = []
    for p in island:
        prob = np.full((S, S), 0.01, np.float32)
        prob[40:90, 40:90] = 0.99  # the lesion, always found
        prob[8:32, 8:32] = p
        probs.append(prob)
    frames = run(build_smoother("keyframe", interval=2), [
        (image, truth, prob) for (image, truth, _), prob in zip(clip, probs, strict=True)
    ])
    y, x = round(20 * 120 / S), round(20 * 160 / S)  # the island's centre in the 160×120 mask
    shown = [bool(f.mask[y, x]) for f in frames]
    # then the single contradiction does not blink it away, and the lasting one removes it by
    # the second keyframe that says so
    assert shown[:6] == [True] * 6
    assert shown[8:] == [False, False]


class SyntheticEngine:
    """The Engine protocol around a synthetic network: the clip's probability maps, late."""

    device = torch.device("cpu")
    size = S
    name = "synthetic"
    threshold = 0.5
    untrained = False

    def __init__(self, probs, delay: float, fail_at: int | None = None):
        self.probs, self.delay, self.fail_at = probs, delay, fail_at
        self.calls: list[int] = []

    def predict(self, frames):
        time.sleep(self.delay)
        for f in frames:
            if f.index == self.fail_at:
                raise RuntimeError("network failed")
            self.calls.append(f.index)
            f.prob = self.probs[f.index]
            f.timings.update(preprocess=0.0, infer=self.delay * 1e3, postprocess=0.0)


def run_paced(smoother, clip, fps=30.0, start_index=0):
    """Frames delivered at ``fps`` like a camera, each asked about and smoothed."""
    out, t0 = [], time.perf_counter()
    for i, (image, _, _) in enumerate(clip):
        time.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
        frame = new_frame(image, start_index + i)
        assert not smoother.wants_inference(frame)  # the worker runs the network, not the pipeline
        smoother(frame)
        out.append(frame)
    return out


@pytest.mark.timeout(60)
def test_async_keyframe_carries_late_results_forward_without_stalling():
    # given a 100 ms network (3 frames at 30 fps) and a panning lesion
    clip = make_clip("slow_pan", seconds=1.0, seed=9)
    engine = SyntheticEngine({i: p for i, (_, _, p) in enumerate(clip)}, delay=0.1)
    network = EngineThread(engine)
    smoother = build_smoother("keyframe", network=network, fps=30)
    try:
        frames = run_paced(smoother, clip)
    finally:
        network.close()
    # then only the first frame waited for the network; the others took a few ms each
    # (medians and loose bounds: the test machine is shared and may stall a thread now and then)
    assert frames[0].notes["keyframe"] and frames[0].timings["smooth"] >= 90
    assert np.median([f.timings["smooth"] for f in frames[1:]]) < 40
    # and results kept arriving, about one per network time, each on a later frame than it was for
    keys = [f.index for f in frames if f.notes["keyframe"]]
    assert len(keys) >= 3 and len(engine.calls) >= 3
    assert frames[-1].notes["keyframe_interval"] >= 2
    # and every frame has a mask that stays on the moving lesion
    ious = [iou(f.mask, t) for f, (_, t, _) in zip(frames, clip, strict=True)]
    assert np.mean(ious) > 0.9


@pytest.mark.timeout(60)
def test_async_keyframe_reset_drops_the_result_in_flight():
    clip = make_clip("static", seconds=0.5, seed=10)
    probs = {i: p for i, (_, _, p) in enumerate(clip)}
    probs.update({100 + i: np.zeros((S, S), np.float32) for i in range(len(clip))})
    engine = SyntheticEngine(probs, delay=0.15)
    network = EngineThread(engine)
    smoother = build_smoother("keyframe", network=network)
    try:
        run_paced(smoother, clip[:3])  # a job for frame 1 or 2 is now running
        smoother.reset()
        # when the next frame (another scene: all background) arrives, it waits for its own result
        frame = run_paced(smoother, clip[3:4], start_index=100)[0]
    finally:
        network.close()
    np.testing.assert_array_equal(frame.prob, probs[100])
    assert frame.mask.sum() == 0


@pytest.mark.timeout(60)
def test_async_keyframe_raises_the_networks_error_and_closes():
    clip = make_clip("static", seconds=0.5, seed=11)
    engine = SyntheticEngine({i: p for i, (_, _, p) in enumerate(clip)}, delay=0.01, fail_at=1)
    network = EngineThread(engine)
    smoother = build_smoother("keyframe", network=network)
    with pytest.raises(RuntimeError, match="network failed"):
        run_paced(smoother, clip)
    network.close()
    assert not network.worker.is_alive()


@pytest.mark.timeout(120)
def test_async_keyframe_with_the_real_cpu_engine():
    # the CPU engine (random weights) on its worker thread: every frame gets a full-size mask
    from stream.engines import build_engine

    clip = make_clip("slow_pan", seconds=0.3, seed=12)
    engine = build_engine(device=torch.device("cpu"), weights=None)
    network = EngineThread(engine)
    smoother = build_smoother("keyframe", network=network, size=engine.size)
    try:
        frames = run_paced(smoother, clip)
    finally:
        network.close()
    assert all(f.mask.shape == (120, 160) and f.prob.shape == (S, S) for f in frames)
    assert frames[0].notes["keyframe"]


class Keep:
    """A sink that keeps the frames it is given (the smoother's notes and masks are on them)."""

    name = "keep"

    def __init__(self):
        self.frames = []

    def open(self, info):
        pass

    def write(self, frame):
        self.frames.append(frame)

    def close(self):
        pass


@pytest.mark.timeout(180)
@pytest.mark.parametrize("threaded", [False, True])
def test_keyframe_smoother_in_the_pipeline(tmp_path, threaded):
    # given a generated sweep written to an H.264 file, and the CPU engine (random weights)
    from stream.bench.synth import write_clip
    from stream.engines import build_engine
    from stream.pipeline import Pipeline
    from stream.sources import open_source

    still = synthetic_still((128, 128), seed=13)
    path = tmp_path / "sweep.mp4"
    write_clip(sweep(*still, motion="slow_pan", size_wh=(96, 72), seconds=0.4), path, None, fps=30)
    engine = build_engine(device=torch.device("cpu"), weights=None)
    network = EngineThread(engine) if threaded else None
    options = {"network": network} if threaded else {"interval": 3}
    smoother = build_smoother("keyframe", size=engine.size, threshold=engine.threshold, **options)
    keep = Keep()
    source = open_source(str(path))
    # when the pipeline runs it in batches of two
    try:
        summary = Pipeline(source, engine, sinks=[keep], smoother=smoother, batch=2).run(
            handle_sigint=False
        )
    finally:
        if threaded:
            network.close()
    # then every frame has a mask of its own size and says how it got it
    assert summary.frames_out == len(keep.frames) == 12
    assert all(f.mask.shape == (72, 96) and f.notes["smooth"] == "keyframe" for f in keep.frames)
    keys = [f.notes["keyframe"] for f in keep.frames]
    if not threaded:
        assert keys == [i % 3 == 0 for i in range(12)]
        assert all(("infer" in f.timings) == k for f, k in zip(keep.frames, keys, strict=True))
    else:
        assert keys[0] and not any("infer" in f.timings for f in keep.frames)
