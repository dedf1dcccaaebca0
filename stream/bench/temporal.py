"""Temporal benchmark: does smoothing stabilise the masks of a moving scope, and at what cost?

For each image/mask pair in ``DIR/images`` + ``DIR/masks`` and each camera motion, a sweep clip
is rendered in-process by :mod:`stream.bench.synth`; the engine of the live pipeline segments every
frame once (cached per clip); then every smoothing mode replays the clip through the same
smoother objects the pipeline uses (``wants_inference`` → network output → ``smoother(frame)``)
and is scored per frame against the warped truth (:mod:`stream.bench.temporal_metrics`).

    python -m stream.temporal_bench --data ../shared/data/isic2017/val --limit 8 --seconds 2 \
        --json temporal.json

Keyframe modes are replayed with the network's batch-1 latency measured on this machine, so
the adaptive interval is the one a live run would pick; ``keyframe/K`` fixes the interval.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from slsnet.data import find_pairs, read_mask, read_rgb
from stream.bench import synth
from stream.bench.temporal_metrics import frame_steps, score_clip
from stream.bench.temporal_report import markdown, print_report, response_line, summarise, verdict
from stream.bench.temporal_response import LEAD, change_of_mind, frames_to_show
from stream.engines import NET_STAGES, build_engine, find_default_weights
from stream.errors import EngineError, WeightsError
from stream.frame import Frame
from stream.segmenter import Segmenter
from stream.smoothing import DEFAULT_MODE, build_smoother, resolve_mode

MOTIONS = ("slow_pan", "fast_pan", "zoom", "rotation", "jitter", "flicker")
CHECKPOINT = Path("runs") / "isic2017" / "best.pt"  # written by training while it runs


def _weights(spec: str | None) -> str | None:
    """``--weights``: a path, ``random``, or None for the shipped then the training checkpoint."""
    if spec == "random":
        return None
    if spec is not None:
        return spec
    found = find_default_weights() or (CHECKPOINT if CHECKPOINT.is_file() else None)
    if found is None:
        raise WeightsError(
            "no trained weights (weights/slsnet_isic2017.pt or runs/isic2017/best.pt); pass "
            "--weights PATH, or --weights random to exercise the benchmark untrained"
        )
    return str(found)


def _clip_key(image: Path, sweep_args: dict, weights: str | None, engine: str) -> str:
    """Cache key of a clip's network outputs: everything that changes them.

    ``engine`` is the engine's name ("cpu int8 onnxruntime, 1 thread": another form of the
    network gives other outputs). ``sweep_args`` are the :func:`stream.bench.synth.sweep`
    arguments, the seed among them: the same image gets another seed (another tremor and
    noise) when ``--limit`` picks it at another place.
    """
    stamp = Path(weights).stat().st_mtime_ns if weights else "random"
    code = hashlib.sha1(Path(synth.__file__).read_bytes()).hexdigest()[:12]
    clip = json.dumps(sweep_args, sort_keys=True)
    text = f"{image.resolve()}|{clip}|{weights}|{stamp}|{code}|{engine}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _frame(image: np.ndarray, index: int, fps: float) -> Frame:
    rate = Fraction(fps).limit_denominator(1001)
    return Frame(image, index, index, 1 / rate, time.perf_counter())


def network_probs(engine, images: list[np.ndarray], fps: float, batch: int) -> np.ndarray:
    """T×S×S float32 network outputs of a clip, computed in batches."""
    out = []
    for start in range(0, len(images), batch):
        frames = [_frame(im, start + i, fps) for i, im in enumerate(images[start : start + batch])]
        engine.infer(frames)
        out.extend(f.prob for f in frames)
    return np.stack(out).astype(np.float32)


def latency_ms(engine, image: np.ndarray, repeats: int = 5) -> dict[str, float]:
    """Median batch-1 stage times (ms) of the engine on one frame, after a warm-up."""
    runs = []
    for i in range(repeats + 1):
        frame = _frame(image, i, 30.0)
        engine.infer([frame])
        runs.append({k: frame.timings[k] for k in NET_STAGES})
    return {k: statistics.median(r[k] for r in runs[1:]) for k in NET_STAGES}


class Replay:
    """An engine whose outputs are known: the cached probabilities of a clip, by frame index.

    Each frame it is asked about gets its probability and the measured network stage times.
    """

    def __init__(self, engine, probs: np.ndarray, net_ms: dict) -> None:
        self.device, self.size, self.name = engine.device, engine.size, engine.name
        self.threshold, self.untrained = engine.threshold, engine.untrained
        self.probs, self.net_ms = probs, net_ms

    def predict(self, frames: list[Frame]) -> None:
        """What ``engine.predict`` gave for these frames."""
        for frame in frames:
            frame.prob = self.probs[frame.index]
            frame.timings.update(self.net_ms)


def replay(
    label: str, options: dict, clip: list, probs: np.ndarray, engine, net_ms: dict, fps: float
):
    """Run one smoothing mode over a clip whose network outputs are known.

    ``async`` is ``keyframe`` with the engine on its own thread: it cannot replay cached outputs,
    so it runs the real engine with the frames paced at ``fps``, as a camera would deliver them.

    Args:
        label: ``MODE``, ``keyframe/K`` or ``async``.
        options: smoother options (``--set``).
        clip: T (frame, truth) pairs from :func:`stream.bench.synth.sweep`.
        probs: T×S×S network outputs of those frames.
        engine: the engine that made them (for S and the threshold).
        net_ms: batch-1 stage times to record on frames sent to the network.
        fps: the clip's frame rate.

    Returns:
        (T predicted H×W masks, extras: share of frames with a network result, mean keyframe
        interval, mean smoothing ms per frame).
    """
    mode, _, k = label.partition("/")
    if k:
        options = {**options, "interval": int(k)}
    live = mode == "async"
    if live:  # the real network on its own thread, as a live source on the CPU runs it
        segmenter = Segmenter.build(engine, "keyframe", live=False, fps=fps, threaded=True,
                                    **options)
    else:
        segmenter = Segmenter.build(Replay(engine, probs, net_ms), mode, live=False, fps=fps,
                                    **options)
    masks, ran, intervals, smooth_ms = [], 0, [], []
    start = time.perf_counter()
    try:
        for i, (image, _) in enumerate(clip):
            if live:
                time.sleep(max(0.0, start + i / fps - time.perf_counter()))
            (frame,) = segmenter.step([_frame(image, i, fps)])
            ran += frame.notes.get("keyframe", True)
            masks.append(frame.mask)
            intervals.append(frame.notes.get("keyframe_interval", 1))
            smooth_ms.append(frame.timings["smooth"])
    finally:
        segmenter.close()
    extras = {
        "net_share": ran / len(clip),
        "interval": float(np.mean(intervals)),
        "smooth_ms": float(np.mean(smooth_ms)),
    }
    return masks, extras


def delays(labels: list[str], options: dict, pair, engine, net_ms: dict,
           args: argparse.Namespace) -> dict[str, float | None]:
    """Per mode, frames until a confident change of the network's mind shows in the mask.

    Replayed on a still clip of the first image (:mod:`stream.bench.temporal_response`); None where
    the mask does not show it within 50 frames. ``async`` runs the real network, which cannot
    be told to change its mind, so it is left out.
    """
    clip, probs = change_of_mind(read_rgb(pair.image), read_mask(pair.mask), engine.size,
                                 frames=LEAD + 50, size_wh=args.size, fps=args.fps)
    truths = [t for _, t in clip]
    out = {}
    for label in labels:
        if label != "async":
            masks, _ = replay(label, options, clip, probs, engine, net_ms, args.fps)
            n = frames_to_show(masks, truths)
            out[label] = n if np.isfinite(n) else None
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stream.temporal_bench", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--data", required=True, help="folder with images/ and masks/ (e.g. ISIC 2017 val)"
    )
    p.add_argument("--json", metavar="OUT", help="write every number as JSON")
    p.add_argument("--markdown", metavar="OUT", help="write the table as markdown")
    p.add_argument(
        "--limit", type=int, default=6, help="images to use, spread over the folder (0: all)"
    )
    p.add_argument("--seconds", type=float, default=2.0, help="length of each clip")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument(
        "--size", type=synth._size, default=(320, 240), metavar="WxH", help="clip frame size"
    )
    p.add_argument(
        "--motions", default=",".join(MOTIONS), help=f"comma list of {', '.join(synth.MOTIONS)}"
    )
    p.add_argument(
        "--modes",
        default="off,ema,flow,keyframe",
        help="modes to compare: off, ema, flow, keyframe, async (threaded keyframe, real time)",
    )
    p.add_argument(
        "--intervals", default="2,4", help="fixed keyframe intervals to add (keyframe/K)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a smoother option for every mode, e.g. history=0.8 (repeatable)",
    )
    p.add_argument(
        "--weights",
        help="weights file, or 'random' (default: shipped, else the training checkpoint)",
    )
    p.add_argument("--runtime", choices=("torch", "onnx", "auto"), default="torch",
                   help="the CPU engine: torch (default), onnx (ONNX Runtime fp32) or auto (the "
                   "fastest form that passed its accuracy check here, as the app runs it)")
    p.add_argument("--batch", type=int, default=8, help="frames per network call when caching")
    p.add_argument("--cache", metavar="DIR", help="keep network outputs per clip here between runs")
    return p


def _options(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace, console: Console) -> dict:
    """The benchmark itself; returns everything that ``--json`` writes."""
    motions = [m for m in args.motions.split(",") if m]
    bad = [m for m in motions if m not in synth.MOTIONS]
    if bad:
        raise ValueError(f"unknown motion {bad[0]!r}; choose from {', '.join(synth.MOTIONS)}")
    labels = [m for m in args.modes.split(",") if m]
    labels += [f"keyframe/{int(k)}" for k in args.intervals.split(",") if k]
    options = _options(args.set)
    for label in labels:  # fail before the long part
        build_smoother("keyframe" if label == "async" else label.split("/")[0], **options)
    weights = _weights(args.weights)
    pairs = find_pairs(args.data)
    if args.limit and args.limit < len(pairs):
        pairs = [pairs[round(i * len(pairs) / args.limit)] for i in range(args.limit)]
    engine = build_engine(device=torch.device("cpu"), weights=weights, runtime=args.runtime,
                          progress=lambda line: console.print(f"[dim]{line}[/]"))
    if getattr(engine, "choice", None):
        console.print(f"runtime {args.runtime}: {engine.name} ({engine.choice})")
    net_ms = None
    cache = Path(args.cache) if args.cache else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    rows = []
    t_start = time.perf_counter()
    for n, pair in enumerate(pairs):
        rgb, mask = read_rgb(pair.image), read_mask(pair.mask)
        for motion in motions:
            sweep_args = dict(motion=motion, size_wh=args.size, fps=args.fps,
                              seconds=args.seconds, seed=n)
            clip = list(synth.sweep(rgb, mask, **sweep_args))
            steps = frame_steps(synth.sweep_views(rgb, mask, **sweep_args))
            if net_ms is None:
                net_ms = latency_ms(engine, clip[0][0])
            key = (cache / f"{_clip_key(pair.image, sweep_args, weights, engine.name)}.npy"
                   if cache else None)
            if key is not None and key.is_file():
                probs = np.load(key).astype(np.float32)
            else:
                probs = network_probs(engine, [f for f, _ in clip], args.fps, args.batch)
                if key is not None:
                    np.save(key, probs.astype(np.float16))
            truths = [t for _, t in clip]
            for label in labels:
                masks, extras = replay(label, options, clip, probs, engine, net_ms, args.fps)
                rows.append(
                    {
                        "image": pair.image.stem,
                        "motion": motion,
                        "label": label,
                        **score_clip(masks, truths, steps),
                        **extras,
                    }
                )
        console.print(
            f"[dim]{n + 1}/{len(pairs)} {pair.image.stem} "
            f"({time.perf_counter() - t_start:.0f} s)[/]"
        )
    summary = summarise(rows)
    response = delays(labels, options, pairs[0], engine, net_ms, args)
    # the clips stand for recorded files: every frame goes through the network, as ``auto`` does
    # for files; the keyframe check covers ``auto`` on a live source on the CPU
    default = resolve_mode(DEFAULT_MODE, live=False, cpu=True)
    checks = verdict(summary, default)
    header = (
        f"{len(pairs)} images × {len(motions)} motions, {args.seconds:g} s at {args.fps:g} fps, "
        f"{args.size[0]}×{args.size[1]}; weights {weights or 'RANDOM (untrained)'}; engine "
        f"{engine.name}, batch-1 network {sum(net_ms.values()):.1f} ms; default {DEFAULT_MODE} "
        f"({default} on files)"
    )
    print_report(console, summary, checks, header)
    console.print(response_line(response))
    return {
        "config": {k: v for k, v in vars(args).items() if k != "json"} | {"size": list(args.size)},
        "weights": weights,
        "engine": engine.name,
        "net_ms": net_ms,
        "default_mode": DEFAULT_MODE,
        "file_mode": default,
        "summary": summary,
        "checks": [{"check": text, "pass": ok} for text, ok in checks],
        "response_frames": response,
        "clips": rows,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    console = Console(width=150) if not sys.stdout.isatty() else Console()
    try:
        result = run(args, console)
    except (FileNotFoundError, ValueError, WeightsError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        console.print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(
            markdown(result["summary"]) + "\n" + response_line(result["response_frames"]) + "\n"
        )
        console.print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
