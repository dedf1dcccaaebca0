"""Temporal smoothing on synthetic sweeps with network-like probability maps (no trained weights).

The clips and the fake network are in ``clips.py``; keyframe propagation is in test_keyframe.py.
"""

import numpy as np
import pytest
from support.clips import SIZE_WH, S, make_clip, new_frame, raw_masks, run

from stream.bench.synth import synthetic_still
from stream.bench.temporal_metrics import flicker, iou
from stream.bench.temporal_response import LEAD, change_of_mind, frames_to_show
from stream.engines.postprocess import prob_to_mask
from stream.smoothing import (
    CHOICES,
    DEFAULT_MODE,
    FLOW_DEFAULTS,
    MODES,
    Ema,
    build_smoother,
    certainty_weight,
    resolve_mode,
)


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


def test_flow_follows_a_moving_lesion_where_the_same_blend_without_flow_trails():
    # given a fast pan: the lesion crosses the frame at up to ~10 px per frame
    clip = make_clip("fast_pan", seconds=1.0, seed=2)
    truths = [t for _, t, _ in clip]
    blend = {k: FLOW_DEFAULTS[k] for k in ("history", "floor", "hysteresis")}

    def follow(mode, **options):
        frames = run(build_smoother(mode, **options), clip)
        return [iou(f.mask, t) for f, t in zip(frames, truths, strict=True)]

    # then with flow's long memory the warped history stays on the lesion on every frame, while
    # the same memory blended in place trails far behind it; ema's own short memory trails less
    flow, trailing = follow("flow"), follow("ema", **blend)
    assert min(flow) > 0.93 and np.mean(flow) > 0.96
    assert np.mean(trailing) < np.mean(flow) - 0.2
    assert np.mean(follow("ema")) < np.mean(flow)


@pytest.mark.parametrize("mode", ["ema", "flow"])
def test_a_confident_change_of_mind_shows_within_a_third_of_a_second(mode):
    # given a still scene where the network sees no lesion, then surely sees it (the skin was
    # covered, or the network was wrong and recovers): the flow cannot help here
    still = synthetic_still((256, 256), seed=1)
    clip, probs = change_of_mind(*still, S, frames=LEAD + 30, size_wh=SIZE_WH, fps=30.0)
    frames = run(build_smoother(mode), [(im, t, p) for (im, t), p in zip(clip, probs, strict=True)])
    # then the mask shows the lesion within 10 frames (1/3 s at 30 FPS) and keeps it: a long
    # memory that steadies the outline must not make the view lag behind what the network sees
    assert not frames[LEAD - 1].mask.any()
    assert frames_to_show([f.mask for f in frames], [t for _, t in clip]) <= 10


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


def test_auto_is_keyframe_for_a_slow_or_unmeasured_live_cpu_source_and_flow_otherwise():
    # a camera on the CPU, the network unmeasured or too slow: keyframes keep the camera's rate
    # (measured by the segmenter: tests/stream/test_segmenter.py)
    assert resolve_mode("auto", live=True, cpu=True) == "keyframe"
    assert resolve_mode("auto", live=True, cpu=True, net_ms=100.0, fps=30.0) == "keyframe"
    assert resolve_mode("auto", live=True, cpu=True, net_ms=10.0, fps=30.0) == "flow"
    # files, and anything on a GPU: every frame through the network, flow-smoothed
    assert resolve_mode("auto", live=False, cpu=True) == "flow"
    assert resolve_mode("auto", live=True, cpu=False) == "flow"
    assert resolve_mode("ema", live=True, cpu=True) == "ema"  # an explicit choice stays
    assert build_smoother("auto", live=True, cpu=True, size=S).mode == "keyframe"
    assert build_smoother("auto", size=S).mode == "flow"
    with pytest.raises(ValueError, match="unknown smoothing mode"):
        resolve_mode("median", live=False, cpu=True)
