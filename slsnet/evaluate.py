"""``python -m slsnet.evaluate``: the paper's metrics of a trained generator on a folder.

Each prediction is resized to its ground-truth mask's own resolution before the 0.5 threshold,
so scores are comparable with those computed at the original image size.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from slsnet.checkpoint import WeightsError, load_generator
from slsnet.data import find_pairs, read_mask, read_rgb
from slsnet.device import resolve_device
from slsnet.generator import Generator
from slsnet.geometry import lesion_centre
from slsnet.inference import predict_net, resize_prob, resize_to_input
from slsnet.metrics import METRICS, MetricAccumulator, size_bands
from slsnet.overlays import draw_grid

# Sarker et al. 2021, Table 3 (ISIC 2017 test split), as fractions.
PAPER_ISIC2017 = {"acc": 0.9761, "dsc": 0.9063, "jsc": 0.8198, "sen": 0.8781, "spe": 0.9992}


def evaluate_arrays(
    generator: Generator,
    images: np.ndarray,
    masks: list[np.ndarray],
    *,
    device: torch.device,
    batch_size: int = 16,
    keep: list | None = None,
    tta: bool = False,
) -> MetricAccumulator:
    """Score ``images`` (N×S×S×3 uint8 RGB at the network size) against full-size bool masks.

    Args:
        keep: if a list is given, each full-size binary prediction is appended to it.
        tta: score the mean over each image and its mirror images (:func:`predict_net`).
    """
    generator.eval()
    acc = MetricAccumulator()
    threshold = generator.config.threshold
    for start in range(0, len(images), batch_size):
        probs = predict_net(generator, images[start : start + batch_size], device, tta=tta)
        for prob, truth in zip(probs, masks[start : start + batch_size], strict=True):
            pred = resize_prob(prob, (truth.shape[1], truth.shape[0])) > threshold
            acc.update(pred, truth)
            if keep is not None:
                keep.append(pred)
    return acc


def lesion_view(
    rgb: np.ndarray, mask: np.ndarray, zoom: float
) -> tuple[np.ndarray, np.ndarray]:
    """What a scope held ``zoom``× closer over the lesion sees: image and mask cut to it.

    The window is 1/``zoom`` of each side, centred on the lesion's centre (the image's, where
    the mask is empty) and moved inside the image. At 2× and more a large lesion fills most of
    the view, the framing whole-image scores never test.

    Args:
        rgb: H×W×3 image. mask: H×W bool mask of the same size. zoom: ≥ 1.
    """
    h, w = mask.shape
    cy, cx = lesion_centre(mask) or ((h - 1) / 2, (w - 1) / 2)
    vh, vw = max(1, round(h / zoom)), max(1, round(w / zoom))
    y = int(np.clip(round(cy + 0.5 - vh / 2), 0, h - vh))
    x = int(np.clip(round(cx + 0.5 - vw / 2), 0, w - vw))
    return rgb[y : y + vh, x : x + vw], mask[y : y + vh, x : x + vw]


def score_views(
    generator: Generator,
    rgbs: list[np.ndarray],
    masks: list[np.ndarray],
    *,
    zoom: float = 1.0,
    device: torch.device,
    keep: list | None = None,
    tta: bool = False,
) -> tuple[MetricAccumulator, list[np.ndarray], list[np.ndarray]]:
    """Score full-size images against their masks, whole (``zoom`` 1) or ``zoom``× closer.

    ``tta``: score the mean over each view and its mirror images (4× the network's time).

    Returns:
        (the scores, the views scored, their masks): the views are the inputs at ``zoom`` 1.
    """
    if zoom > 1:
        views = [lesion_view(im, m, zoom) for im, m in zip(rgbs, masks, strict=True)]
        rgbs, masks = [v[0] for v in views], [v[1] for v in views]
    size = generator.config.input_size
    small = np.stack([resize_to_input(im, size) for im in rgbs])
    return (evaluate_arrays(generator, small, masks, device=device, keep=keep, tta=tta),
            rgbs, masks)


def _bands_table(bands: list[dict]) -> Table:
    """The per-lesion-size rows of :func:`slsnet.metrics.size_bands` as a table."""
    table = Table(title="by lesion size (share of the view that is lesion)")
    for name in ("lesion area", "images", "JSC", "predicted / true area (median)"):
        table.add_column(name, justify="right")
    for b in bands:
        ratio = "-" if b["area_ratio"] is None else f"{b['area_ratio']:.2f}"
        table.add_row(f"{100 * b['from']:.0f}–{100 * b['to']:.0f} %", str(b["n"]),
                      f"{100 * b['jsc']:.2f}", ratio)
    return table


def _write_outputs(args: argparse.Namespace, summary: dict, per_image: list[dict],
                   grid: tuple[list, list, list]) -> None:
    """The files asked for: the JSON summary, the per-image CSV, the overlay grid."""
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2))
    if args.per_image:
        with open(args.per_image, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=list(per_image[0]) if per_image else ["image"])
            out.writeheader()
            out.writerows({k: f"{v:.5f}" if isinstance(v, float) else v for k, v in row.items()}
                          for row in per_image)
    if args.overlays:
        draw_grid(*grid, args.overlays)


def main(argv: list[str] | None = None) -> int:
    """Evaluate; prints a rich table and optionally writes JSON and an overlay grid."""
    parser = argparse.ArgumentParser(prog="python -m slsnet.evaluate", description=__doc__)
    parser.add_argument("--data", required=True, help="folder with images/ and masks/")
    parser.add_argument("--weights", help="generator weights (.pt; default: the shipped ones)")
    parser.add_argument("--json", dest="json_out", help="write {'n', 'metrics'} here")
    parser.add_argument("--overlays", help="write a PNG grid of image / truth / prediction")
    parser.add_argument("--per-image", help="write each image's lesion areas and scores to this "
                        "CSV file")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--zoom", type=float, default=1.0,
                        help="score the view of a scope held this much closer over each lesion "
                        "(its centre), not the whole image (1: whole images)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: score the mean of the network over each "
                        "image and its three mirror images (4x the time)")
    args = parser.parse_args(argv)

    if args.zoom < 1:
        print(f"error: --zoom must be at least 1, not {args.zoom}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        generator = load_generator(args.weights, device=device)
        pairs = find_pairs(args.data)
        rgbs = [read_rgb(p.image) for p in pairs]
        masks = [read_mask(p.mask) for p in pairs]
    except (FileNotFoundError, ValueError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    preds: list[np.ndarray] = []
    acc, rgbs, masks = score_views(generator, rgbs, masks, zoom=args.zoom, device=device,
                                   keep=preds, tta=args.tta)
    mean, pooled = acc.mean(), acc.pooled()

    where = f"{len(acc)} images in {args.data}" + (", mirror mean (--tta)" if args.tta else "")
    table = Table(title=where if args.zoom == 1 else f"{where}, {args.zoom:g}x over each lesion")
    table.add_column("")
    for m in METRICS:
        table.add_column(m.upper().replace("_TH", "_th"), justify="right")
    table.add_row("this model (mean)", *(f"{100 * mean[m]:.2f}" for m in METRICS))
    table.add_row("this model (median)", *(f"{100 * v:.2f}" for v in acc.median().values()),
                  style="dim")
    table.add_row("this model (pooled)", *(f"{100 * pooled[m]:.2f}" for m in METRICS), style="dim")
    table.add_row(
        "paper, ISIC 2017 test",
        *(f"{100 * PAPER_ISIC2017[m]:.2f}" if m in PAPER_ISIC2017 else "-" for m in METRICS),
        style="dim",
    )
    console = Console()
    console.print(table)
    per_image = [{"image": pair.image.name, "lesion_area": float(truth.mean()),
                  "predicted_area": float(pred.mean()), **row}
                 for pair, truth, pred, row in zip(pairs, masks, preds, acc.per_image,
                                                   strict=True)]
    bands = size_bands(*([r[k] for r in per_image] for k in ("lesion_area", "predicted_area",
                                                             "jsc")))
    console.print(_bands_table(bands))
    summary = {"n": len(acc), "zoom": args.zoom, "tta": args.tta, "metrics": mean,
               "median": acc.median(), "pooled": pooled, "by_lesion_size": bands}
    try:
        _write_outputs(args, summary, per_image, (rgbs, masks, preds))
    except OSError as exc:
        print(f"error: cannot write the results: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
