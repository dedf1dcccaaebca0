"""Temporal metrics on hand-made mask sequences, and the benchmark end to end on tiny clips."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.bench import temporal as temporal_bench
from stream.bench.synth import sweep, sweep_views, synthetic_still
from stream.bench.temporal_metrics import (
    flicker,
    flicker_reduction,
    frame_steps,
    iou,
    mean_rows,
    moved_flicker,
    residual_flicker,
    score_clip,
    unsteady_cut,
)
from stream.bench.temporal_report import markdown, summarise, verdict
from stream.bench.temporal_response import LEAD, frames_to_show

ROOT = Path(__file__).resolve().parents[3]


def square(x: int, y: int, side: int = 10, size_wh=(40, 30)) -> np.ndarray:
    m = np.zeros(size_wh[::-1], np.uint8)
    m[y : y + side, x : x + side] = 1
    return m


def test_iou_of_hand_made_masks():
    a, b = square(0, 0), square(5, 0)  # 50 px overlap of 150 px union
    assert iou(a, b) == pytest.approx(50 / 150)
    assert iou(a, a) == 1.0
    empty = np.zeros_like(a)
    assert iou(empty, empty) == 1.0  # nothing there, nothing predicted: agreement
    assert iou(a, empty) == 0.0
    with pytest.raises(ValueError, match="shape"):
        iou(a, np.zeros((3, 3)))


def test_flicker_is_mean_one_minus_iou_of_consecutive_masks():
    still = [square(5, 5)] * 4
    assert flicker(still) == 0.0
    # a mask that blinks on and off: 1 − IoU is 1 at every step
    blink = [square(5, 5), np.zeros((30, 40), np.uint8)] * 2
    assert flicker(blink) == 1.0
    # a square moving 5 px per frame: IoU 50/150 at each of the 2 steps
    moving = [square(0, 0), square(5, 0), square(10, 0)]
    assert flicker(moving) == pytest.approx(1 - 50 / 150)
    assert flicker([square(0, 0)]) == 0.0


def test_score_clip_separates_motion_from_flicker():
    # given a truth that moves and a prediction that moves the same way but blinks once
    truths = [square(2 * i, 5) for i in range(5)]
    preds = [t.copy() for t in truths]
    preds[2] = np.zeros_like(preds[2])
    s = score_clip(preds, truths)
    # then per-frame JSC is 1 on 4 frames and 0 on one; DSC likewise
    assert s["jsc"] == pytest.approx(0.8) and s["dsc"] == pytest.approx(0.8)
    # and the excess flicker is what the blink added on top of the motion
    assert s["truth_flicker"] == pytest.approx(1 - 80 / 120)
    assert s["flicker"] == pytest.approx((2 * (1 - 80 / 120) + 2 * 1.0) / 4)
    assert s["excess_flicker"] == pytest.approx(s["flicker"] - s["truth_flicker"])
    assert s["frames"] == 5
    with pytest.raises(ValueError):
        score_clip(preds[:2], truths)


def shift(dx: float, dy: float = 0.0) -> np.ndarray:
    """A view that looks dx, dy pixels further along (frame pixel → scene point)."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def test_residual_flicker_undoes_the_cameras_motion():
    # given a camera panning 5 px per frame over a still lesion: the square moves back 5 px
    views = [shift(5 * t) for t in range(3)]
    steps = frame_steps(views)
    moving = [square(10, 5), square(5, 5), square(0, 5)]
    # then a mask that only moves with the scene has no residual flicker, though plenty of flicker
    assert flicker(moving) == pytest.approx(1 - 50 / 150)
    assert residual_flicker(moving, steps) == pytest.approx(0.0)
    # and one that blinks keeps all of it
    blink = [moving[0], np.zeros_like(moving[1]), moving[2]]
    assert residual_flicker(blink, steps) == pytest.approx(1.0)
    # a mask that stays put on screen while the scene moves under it: only the pixels both
    # frames see count (the 5 px that enter the view have no past)
    fixed = [square(10, 5)] * 3
    seen_overlap = 1 - 50 / 150  # the same square against itself moved 5 px
    assert residual_flicker(fixed, steps) == pytest.approx(seen_overlap)
    with pytest.raises(ValueError, match="steps"):
        residual_flicker(moving, steps[:1])
    assert np.isnan(score_clip(moving, moving)["residual_flicker"])
    assert score_clip(moving, moving, steps)["truth_residual_flicker"] == pytest.approx(0.0)


def test_a_small_stable_mask_on_a_fast_pan_flickers_only_by_the_plain_measure():
    # given a real fast pan over a lesion, and a mask a quarter of the lesion's size that
    # follows the scene exactly (a network that is wrong about the size but perfectly stable)
    rgb, mask = synthetic_still(seed=3)
    small = cv2.erode((mask > 0).astype(np.uint8), np.ones((41, 41), np.uint8))
    args = dict(motion="fast_pan", size_wh=(160, 120), fps=30, seconds=0.5, seed=0)
    truths = [t for _, t in sweep(rgb, mask, **args)]
    stable = [t for _, t in sweep(rgb, small, **args)]
    steps = frame_steps(sweep_views(rgb, mask, **args))
    assert 0 < np.mean([m.mean() for m in stable]) < 0.5 * np.mean([t.mean() for t in truths])
    s = score_clip(stable, truths, steps)
    # then the plain measure counts its motion as excess flicker; the residual one keeps only
    # resampling noise at the small mask's edge (the truth's own is 0.012)
    assert s["excess_flicker"] > 0.06
    assert s["truth_residual_flicker"] < 0.02
    assert s["residual_flicker"] - s["truth_residual_flicker"] < s["excess_flicker"] / 3
    # and the split of the excess puts it in the shape part
    assert abs(s["unsteady_excess"]) < s["excess_flicker"] / 5


def test_the_excess_splits_into_a_shape_part_and_an_unsteady_part():
    # given a camera panning 5 px per frame over a lesion seen as a 20 px square, and a
    # prediction half its side that moves exactly with it
    steps = frame_steps([shift(5 * t) for t in range(3)])
    truths = [square(15 - 5 * t, 5, side=20) for t in range(3)]
    stable = [square(20 - 5 * t, 10) for t in range(3)]
    assert moved_flicker(truths, steps) == pytest.approx(1 - 300 / 500)
    s = score_clip(stable, truths, steps)
    # then all of its excess flicker comes from its shape: nothing for a smoother to remove
    assert s["excess_flicker"] == pytest.approx((1 - 50 / 150) - (1 - 300 / 500))
    assert s["shape_excess"] == pytest.approx(s["excess_flicker"])
    assert s["unsteady_excess"] == pytest.approx(0.0)
    # and a prediction that blinks out for a frame is unsteady by what the blink adds
    blink = [stable[0], np.zeros_like(stable[1]), stable[2]]
    b = score_clip(blink, truths, steps)
    assert b["flicker"] == 1.0
    assert b["shape_excess"] == pytest.approx((1 - 50 / 150) / 2 - (1 - 300 / 500))
    assert b["unsteady_excess"] == pytest.approx(1.0 - (1 - 50 / 150) / 2)
    assert unsteady_cut(s, b) == pytest.approx(1.0)
    assert np.isnan(score_clip(stable, truths)["unsteady_excess"])
    with pytest.raises(ValueError, match="steps"):
        moved_flicker(stable, steps[:1])


def test_flicker_reduction_and_means():
    off = {"excess_flicker": 0.04}
    assert flicker_reduction({"excess_flicker": 0.01}, off) == pytest.approx(0.75)
    assert flicker_reduction({"excess_flicker": 0.06}, off) == pytest.approx(-0.5)
    assert flicker_reduction({"excess_flicker": 0.01}, {"excess_flicker": 0.0}) == 0.0
    rows = [
        score_clip([square(0, 0)] * 2, [square(0, 0)] * 2),
        score_clip([square(0, 0)] * 2, [square(5, 0)] * 2),
    ]
    m = mean_rows(rows)
    assert m["clips"] == 2 and m["jsc"] == pytest.approx((1 + 50 / 150) / 2)


def row(motion, label, jsc, excess, unsteady=None):
    split = {} if unsteady is None else {
        "shape_excess": excess - unsteady, "unsteady_excess": unsteady
    }
    return split | {
        "motion": motion,
        "label": label,
        "jsc": jsc,
        "dsc": jsc,
        "flicker": 0.1 + excess,
        "truth_flicker": 0.1,
        "excess_flicker": excess,
        "frames": 10.0,
        "net_share": 1.0,
        "interval": 1.0,
        "smooth_ms": 1.0,
    }


def test_verdict_applies_the_acceptance_rules():
    rows = [
        row("pan", "off", 0.80, 0.04),
        row("pan", "flow", 0.795, 0.015),
        row("pan", "keyframe", 0.78, 0.01),
        row("zoom", "off", 0.80, 0.04),
        row("zoom", "flow", 0.78, 0.03),
        row("zoom", "keyframe", 0.75, 0.02),
    ]
    summary = summarise(rows)
    assert list(summary) == ["pan", "zoom", "overall"]
    assert summary["overall"]["off"]["jsc"] == pytest.approx(0.80)
    checks = dict(verdict(summary, "flow"))
    passed = {
        text.split(":")[0]
        + (" jsc" if "JSC change" in text else " flicker" if "flicker" in text else " keyframe"): ok
        for text, ok in checks.items()
    }
    # pan: flicker cut 62 %, JSC −0.005, keyframe cost 0.015: all pass
    assert passed["pan flicker"] and passed["pan jsc"] and passed["pan keyframe"]
    # zoom: flicker cut only 25 %, JSC −0.02, keyframe cost 0.03: all fail
    assert not (passed["zoom flicker"] or passed["zoom jsc"] or passed["zoom keyframe"])
    assert not any("unsteady" in text for text in checks)  # no camera motion known
    table = markdown(summary)
    assert table.count("\n") == 2 + 9 and "| pan | flow | 0.7950 |" in table


def test_verdict_also_asks_the_unsteady_part_to_be_halved_where_it_is_known():
    # given a fast pan where most of off's excess is the masks' shape: 0.03 of 0.04
    rows = [row("fast", "off", 0.8, 0.04, unsteady=0.01), row("fast", "flow", 0.8, 0.034, 0.004)]
    checks = verdict(summarise(rows), "flow")
    texts = [text for text, _ in checks]
    # then the literal check fails (15 % cut) and the unsteady part's passes (60 % cut)
    assert dict(checks)[texts[0]] is False and "15%" in texts[0]
    assert dict(checks)[texts[1]] is True and "unsteady part by 60%" in texts[1]
    assert "| +0.0300 | — |" in markdown(summarise(rows))  # off's shape part, no cut of its own


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for seed in range(2):
        rgb, mask = synthetic_still((96, 96), seed=seed)
        cv2.imwrite(str(root / "images" / f"IMG_{seed}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(
            str(root / "masks" / f"IMG_{seed}_segmentation.png"), mask.astype(np.uint8) * 255
        )
    return root


def bench(*args):
    return subprocess.run(
        [sys.executable, "-m", "stream.temporal_bench", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_frames_to_show_counts_from_the_change_until_the_mask_stays():
    truths = [square(10, 10)] * (LEAD + 6)
    empty = np.zeros_like(truths[0])

    def delay(after):  # the masks after the change; before it the lesion was never shown
        return frames_to_show([empty] * LEAD + after, truths)

    assert delay([square(10, 10)] * 6) == 1
    assert delay([empty, empty] + [square(10, 10)] * 4) == 3
    # a mask that shows the lesion, loses it and shows it again counts from the second time
    assert delay([square(10, 10), empty, empty] + [square(10, 10)] * 3) == 4
    # a mask far off the truth (IoU 0.32) does not show it, and one that never does is inf
    assert delay([square(13, 13)] * 6) == float("inf")


@pytest.mark.timeout(240)
def test_benchmark_runs_every_mode_and_writes_json(tiny_data, tmp_path):
    # when the benchmark runs on one still, two motions, with an untrained network
    out, md = tmp_path / "t.json", tmp_path / "t.md"
    r = bench(
        "--data",
        tiny_data,
        "--limit",
        "1",
        "--seconds",
        "0.2",
        "--size",
        "64x48",
        "--motions",
        "slow_pan,flicker",
        "--intervals",
        "2",
        "--weights",
        "random",
        "--json",
        out,
        "--markdown",
        md,
        "--cache",
        tmp_path / "cache",
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    # then every motion × mode was scored on 6 frames, with the adaptive keyframe's k reported
    assert set(result["summary"]) == {"slow_pan", "flicker", "overall"}
    labels = ["off", "ema", "flow", "keyframe", "keyframe/2"]
    assert list(result["summary"]["overall"]) == labels
    assert len(result["clips"]) == 2 * len(labels) and all(
        c["frames"] == 6 for c in result["clips"]
    )
    kf2 = [c for c in result["clips"] if c["label"] == "keyframe/2"][0]
    assert kf2["net_share"] == pytest.approx(3 / 6) and kf2["interval"] == 2
    assert result["weights"] is None and "RANDOM" in r.stdout
    assert md.read_text().startswith("| motion | mode |")
    # and each mode's delay in showing a confident change: none for off, a few frames for the
    # smoothers' memory, at least until the next keyframe for keyframe/2
    response = result["response_frames"]
    assert list(response) == labels and response["off"] == 1
    assert 1 <= response["ema"] < response["flow"] <= 10 and 2 <= response["keyframe/2"] <= 10
    assert "Frames to show a confident change" in r.stdout and "flow " in md.read_text()
    # and the network outputs were cached for the next run
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--data", "{tmp}/nowhere", "--weights", "random"], "is not a folder"),
        (["--data", "{data}", "--weights", "random", "--motions", "spin"], "unknown motion"),
        (
            ["--data", "{data}", "--weights", "random", "--modes", "median"],
            "unknown smoothing mode",
        ),
        (["--data", "{data}", "--weights", "{tmp}/missing.pt"], "weights file not found"),
    ],
)
def test_benchmark_user_errors_are_one_line(tmp_path, tiny_data, capsys, flags, message):
    argv = [f.format(tmp=tmp_path, data=tiny_data) for f in flags]
    assert temporal_bench.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


@pytest.mark.timeout(240)
def test_live_loop_speed_reports_every_mode(tmp_path):
    # given a short real clip written by the generator
    from stream.bench import temporal_speed
    from stream.bench.synth import sweep, write_clip

    still = synthetic_still((96, 96), seed=4)
    clip = tmp_path / "clip.mp4"
    write_clip(sweep(*still, size_wh=(96, 72), seconds=0.2), clip, None, fps=30)
    out = tmp_path / "speed.json"
    # when every mode plays it
    argv = ["--video", str(clip), "--frames", "4", "--modes", "off,flow,keyframe,async"]
    assert temporal_speed.main([*argv, "--json", str(out)]) == 0
    rows = {r["mode"]: r for r in json.loads(out.read_text())["rows"]}
    # then each reports its speed; off runs the network on every frame, keyframe on fewer
    assert list(rows) == ["off", "flow", "keyframe", "async"]
    assert all(r["frames"] == 4 and r["fps"] > 0 and r["loop_cpu_ms"] > 0 for r in rows.values())
    assert rows["off"]["network_share"] == 1.0 and rows["async"]["late"] is not None


def test_live_loop_speed_errors(tmp_path, capsys):
    from stream.bench import temporal_speed

    assert temporal_speed.main(["--video", str(tmp_path / "none.mp4")]) == 2
    assert temporal_speed.main(["--modes", "median"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: video not found") and "unknown mode" in err[1]


def test_cached_network_outputs_belong_to_one_clip(tmp_path):
    # given one image swept with the same motion under two seeds (--limit picks it at another
    # place), which makes two different clips
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    args = dict(motion="jitter", size_wh=(64, 48), fps=30.0, seconds=0.2)
    still, mask = synthetic_still((64, 64), seed=0)
    first, second = (
        [f for f, _ in sweep(still, mask, **args, seed=seed)] for seed in (0, 1)
    )
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    # then their network outputs are cached apart, and each clip finds its own again
    keys = {temporal_bench._clip_key(image, {**args, "seed": seed}, None, "cpu fp32")
            for seed in (0, 1, 1)}
    assert len(keys) == 2
    assert temporal_bench._clip_key(image, {**args, "seed": 0, "motion": "zoom"}, None,
                                    "cpu fp32") not in keys
    # another form of the network (int8) has outputs of its own
    assert temporal_bench._clip_key(image, {**args, "seed": 0}, None, "cpu int8") not in keys
