"""Temporal smoothing on synthetic sweeps with network-like probability maps (no trained weights).

The "network" here is the warped truth, blurred, pushed through a logistic with spatially smooth
noise that changes every frame plus a global per-frame offset: the boundary wobbles and whole
regions flip from frame to frame, which is the flicker a smoother must remove.
"""

import time
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

from stream.frame import Frame
from stream.postprocess import prob_to_mask
from stream.smoothing import (
    CHOICES,
    DEFAULT_MODE,
    MODES,
    Ema,
    build_smoother,
    certainty_weight,
    resolve_mode,
)
from stream.synth import sweep, synthetic_still
from stream.temporal_metrics import flicker, iou

S = 128
SIZE_WH = (160, 120)


def net_like(truth: np.ndarray, rng: np.random.Generator, noise: float = 1.5) -> np.ndarray:
    """An S×S probability map that a flickering network might give for this truth."""
    t = cv2.resize(truth.astype(np.float32), (S, S), interpolation=cv2.INTER_AREA)
    signed = cv2.GaussianBlur(t, (0, 0), 2.0) - 0.5
    field = cv2.GaussianBlur(rng.standard_normal((S, S)).astype(np.float32), (0, 0), 4.0) * 4
    logit = 12 * signed + noise * field + 0.3 * rng.standard_normal()
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


def make_clip(motion: str, seconds: float = 1.0, seed: int = 0):
    still = synthetic_still((256, 256), seed=seed)
    clip = list(sweep(*still, motion=motion, size_wh=SIZE_WH, seconds=seconds, seed=seed))
    rng = np.random.default_rng(seed + 100)
    return [(img, truth, net_like(truth, rng)) for img, truth in clip]


def new_frame(image: np.ndarray, index: int) -> Frame:
    return Frame(image, index, index, Fraction(1, 30), 0.0)


def run(smoother, clip, start: int = 0, net_ms: float = 0.0) -> list[Frame]:
    """What the pipeline does per frame: ask, run the 'network' if wanted, smooth."""
    out = []
    for i, (image, _, prob) in enumerate(clip):
        frame = new_frame(image, start + i)
        if smoother.wants_inference(frame):
            frame.prob = prob
            frame.mask = prob_to_mask(prob, frame.size_wh, 0.5)
            frame.timings["infer"] = net_ms
        smoother(frame)
        out.append(frame)
    return out


def raw_masks(clip):
    return [prob_to_mask(p, SIZE_WH, 0.5) for _, _, p in clip]


@pytest.fixture(scope="module")
def static_clip():
    return make_clip("static", seconds=1.0, seed=1)


@pytest.mark.parametrize("mode", ["ema", "flow", "keyframe"])
def test_static_clip_converges_to_the_still_image_mask(static_clip, mode):
    # given a still scene whose network output flickers around the truth
    truth = static_clip[0][1]
    raw = raw_masks(static_clip)
    # when it is smoothed
    frames = run(build_smoother(mode, interval=3), static_clip)
    masks = [f.mask for f in frames]
    # then the smoothed mask settles on the still's mask: closer than the raw masks, and steadier
    settled = masks[10:]
    assert np.mean([iou(m, truth) for m in settled]) > np.mean([iou(m, truth) for m in raw[10:]])
    assert min(iou(m, truth) for m in settled) > 0.93
    assert flicker(settled) < 0.5 * flicker(raw[10:])


@pytest.mark.parametrize("mode", ["ema", "flow"])
def test_a_constant_probability_map_is_a_fixed_point(static_clip, mode):
    # given the same probability map on every frame
    base = static_clip[0][2]
    clip = [(img, truth, base) for img, truth, _ in static_clip[:8]]
    frames = run(build_smoother(mode), clip)
    # then smoothing leaves it (almost) as it is: sensor noise makes the flow of a still scene
    # wobble by a fraction of a pixel, which moves steep edges a little
    for f in frames:
        np.testing.assert_allclose(f.prob, base, atol=0.05)
        assert np.abs(f.prob - base).mean() < 0.002
    assert iou(frames[-1].mask, prob_to_mask(base, SIZE_WH, 0.5)) > 0.99


def test_flow_follows_a_moving_lesion_better_than_ema():
    # given a fast pan: the lesion crosses the frame at up to ~10 px per frame
    clip = make_clip("fast_pan", seconds=1.0, seed=2)
    truths = [t for _, t, _ in clip]

    def follow(mode):
        return np.mean(
            [iou(f.mask, t) for f, t in zip(run(build_smoother(mode), clip), truths, strict=True)]
        )

    # then the flow-warped history stays on the lesion; plain blending trails behind it
    ema, flow = follow("ema"), follow("flow")
    assert flow > ema + 0.02
    assert flow > 0.9


@pytest.mark.parametrize("mode", ["ema", "flow", "keyframe"])
def test_scene_cut_resets_the_history(mode):
    # given two different scenes back to back
    a, b = make_clip("static", 0.34, seed=3), make_clip("slow_pan", 0.34, seed=4)
    smoother = build_smoother(mode, interval=8)
    before = run(smoother, a)
    # when the first frame of the second scene arrives
    cut = new_frame(b[0][0], len(a))
    assert smoother.wants_inference(cut)  # a keyframe smoother asks for the network here
    cut.prob = b[0][2]
    smoother(cut)
    # then nothing of the first scene is blended in, and the cut is noted
    np.testing.assert_array_equal(cut.prob, b[0][2])
    assert cut.notes["cut"] is True
    assert not any(f.notes["cut"] for f in before[1:])


def test_light_flicker_is_not_a_cut():
    clip = make_clip("flicker", seconds=1.0, seed=5)
    frames = run(build_smoother("flow"), clip)
    assert not any(f.notes["cut"] for f in frames[1:])


@pytest.mark.parametrize("mode", ["ema", "flow", "keyframe"])
def test_reset_and_seek_forget_the_history(static_clip, mode):
    smoother = build_smoother(mode, interval=4)
    run(smoother, static_clip[:5])
    # when reset (as on seek or source change), the next frame is the network's own output
    smoother.reset()
    frame = run(smoother, static_clip[5:6], start=5)[0]
    np.testing.assert_array_equal(frame.prob, static_clip[5][2])
    # and a jump in frame numbers (a seek the pipeline did not announce) counts as a cut too
    jumped = run(smoother, static_clip[6:7], start=500)[0]
    np.testing.assert_array_equal(jumped.prob, static_clip[6][2])
    assert jumped.notes["cut"] is True


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


def test_batches_give_the_same_result_as_single_frames():
    # the pipeline may ask wants_inference for a whole batch before smoothing each frame
    clip = make_clip("slow_pan", seconds=0.5, seed=8)
    single = run(build_smoother("keyframe", interval=3), clip)
    smoother = build_smoother("keyframe", interval=3)
    batched = []
    for start in range(0, len(clip), 4):
        frames = [
            new_frame(img, start + i) for i, (img, _, _) in enumerate(clip[start : start + 4])
        ]
        wanted = [smoother.wants_inference(f) for f in frames]
        for f, want, (_, _, prob) in zip(frames, wanted, clip[start : start + 4], strict=True):
            if want:
                f.prob = prob
        for f in frames:
            smoother(f)
        batched.extend(frames)
    for a, b in zip(single, batched, strict=True):
        np.testing.assert_allclose(a.prob, b.prob, atol=1e-6)


def test_hysteresis_holds_a_pixel_that_wavers_around_the_threshold(static_clip):
    image = static_clip[0][0]
    low, high = np.full((S, S), 0.45, np.float32), np.full((S, S), 0.55, np.float32)

    def masks(hysteresis):
        smoother = Ema(history=0.0, floor=0.0, hysteresis=hysteresis)  # no blending at all
        out = []
        for i, p in enumerate([high, low, high, low]):
            f = new_frame(image, i)
            f.prob = p
            smoother(f)
            out.append(int(f.mask.mean() > 0.5))
        return out

    assert masks(0.0) == [1, 0, 1, 0]
    assert masks(0.1) == [1, 1, 1, 1]


def test_certainty_weight_trusts_sure_values_and_doubts_half():
    w = certainty_weight(np.array([0.0, 0.5, 0.9, 1.0], np.float32))
    assert w[1] == pytest.approx(0.0, abs=1e-6)
    assert w[0] == pytest.approx(1.0, abs=1e-3) and w[3] == pytest.approx(1.0, abs=1e-3)
    assert 0.5 < w[2] < 1.0


def test_build_smoother_modes_and_errors():
    assert set(MODES) == {"off", "ema", "flow", "keyframe"} and DEFAULT_MODE in CHOICES
    for mode in MODES:
        smoother = build_smoother(mode, size=S, threshold=0.5, fps=25.0, interval=2)  # shared set
        assert smoother.mode == mode
    with pytest.raises(ValueError, match="unknown smoothing mode"):
        build_smoother("median")
    with pytest.raises(ValueError, match="at least 1"):
        build_smoother("keyframe", interval=0)


def test_every_mode_records_its_time_and_name(static_clip):
    for mode in MODES:
        frame = run(build_smoother(mode), static_clip[:2])[-1]
        assert frame.timings["smooth"] >= 0 and frame.notes["smooth"] == mode


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

    def infer(self, frames):
        time.sleep(self.delay)
        for f in frames:
            if f.index == self.fail_at:
                raise RuntimeError("network failed")
            self.calls.append(f.index)
            f.prob = self.probs[f.index]
            f.mask = prob_to_mask(f.prob, f.size_wh, self.threshold)
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
    smoother = build_smoother("keyframe", engine=engine, fps=30)
    try:
        frames = run_paced(smoother, clip)
    finally:
        smoother.close()
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
    smoother = build_smoother("keyframe", engine=engine)
    try:
        run_paced(smoother, clip[:3])  # a job for frame 1 or 2 is now running
        smoother.reset()
        # when the next frame (another scene: all background) arrives, it waits for its own result
        frame = run_paced(smoother, clip[3:4], start_index=100)[0]
    finally:
        smoother.close()
    np.testing.assert_array_equal(frame.prob, probs[100])
    assert frame.mask.sum() == 0


@pytest.mark.timeout(60)
def test_async_keyframe_raises_the_networks_error_and_closes():
    clip = make_clip("static", seconds=0.5, seed=11)
    engine = SyntheticEngine({i: p for i, (_, _, p) in enumerate(clip)}, delay=0.01, fail_at=1)
    smoother = build_smoother("keyframe", engine=engine)
    with pytest.raises(RuntimeError, match="network failed"):
        run_paced(smoother, clip)
    smoother.close()
    assert not smoother.worker.is_alive()


@pytest.mark.timeout(120)
def test_async_keyframe_with_the_real_cpu_engine():
    # the CPU engine (random weights) on its worker thread: every frame gets a full-size mask
    from stream.engine import build_engine

    clip = make_clip("slow_pan", seconds=0.3, seed=12)
    engine = build_engine(device=torch.device("cpu"), weights=None)
    smoother = build_smoother("keyframe", engine=engine, size=engine.size)
    try:
        frames = run_paced(smoother, clip)
    finally:
        smoother.close()
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
    from stream.engine import build_engine
    from stream.pipeline import Pipeline
    from stream.sources import open_source
    from stream.synth import write_clip

    still = synthetic_still((128, 128), seed=13)
    path = tmp_path / "sweep.mp4"
    write_clip(sweep(*still, motion="slow_pan", size_wh=(96, 72), seconds=0.4), path, None, fps=30)
    engine = build_engine(device=torch.device("cpu"), weights=None)
    options = {"engine": engine} if threaded else {"interval": 3}
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
            smoother.close()
    # then every frame has a mask of its own size and says how it got it
    assert summary.frames_out == len(keep.frames) == 12
    assert all(f.mask.shape == (72, 96) and f.notes["smooth"] == "keyframe" for f in keep.frames)
    keys = [f.notes["keyframe"] for f in keep.frames]
    if not threaded:
        assert keys == [i % 3 == 0 for i in range(12)]
        assert all(("infer" in f.timings) == k for f, k in zip(keep.frames, keys, strict=True))
    else:
        assert keys[0] and not any("infer" in f.timings for f in keep.frames)


def test_auto_is_keyframe_for_a_live_source_on_the_cpu_and_flow_otherwise():
    # a camera on the CPU: the network cannot keep up, keyframes keep the view at the camera rate
    assert resolve_mode("auto", live=True, cpu=True) == "keyframe"
    # files, and anything on a GPU: every frame through the network, flow-smoothed
    assert resolve_mode("auto", live=False, cpu=True) == "flow"
    assert resolve_mode("auto", live=True, cpu=False) == "flow"
    assert resolve_mode("ema", live=True, cpu=True) == "ema"  # an explicit choice stays
    assert build_smoother("auto", live=True, cpu=True, size=S).mode == "keyframe"
    assert build_smoother("auto", size=S).mode == "flow"
    with pytest.raises(ValueError, match="unknown smoothing mode"):
        resolve_mode("median", live=False, cpu=True)
