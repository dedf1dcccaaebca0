"""Training curves, as a PNG and as the numbers a model card keeps of its run.

The PNG is drawn with OpenCV (no plotting library needed). :func:`card_curve` is the few numbers
per epoch that a model card keeps, so that a later run can be set beside the shipped one on a
machine that never held its folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

SERIES = (  # (label, key path, BGR colour)
    ("G loss", ("g_total",), (200, 80, 20)),
    ("D loss", ("d_total",), (40, 40, 220)),
    ("val JSC", ("val", "jsc"), (40, 160, 40)),
    ("val DSC", ("val", "dsc"), (160, 40, 160)),
)


def _get(record: dict, keys: tuple[str, ...]) -> float:
    for k in keys:
        record = record[k]
    return float(record)


def draw_curves(
    log_path: str | Path, png_path: str | Path, size_wh: tuple[int, int] = (800, 450)
) -> None:
    """Plot each series of ``log.jsonl`` (one record per epoch), each scaled to its own range."""
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    w, h = size_wh
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 30, 40
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    cv2.putText(
        img, f"epochs 1-{len(records)}", (left, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
    )
    for n, (label, keys, colour) in enumerate(SERIES):
        values = np.array([_get(r, keys) for r in records], float)
        lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
        span = hi - lo or 1.0
        xs = np.linspace(left, w - right, max(len(values), 2))[: len(values)]
        ys = (h - bottom) - (values - lo) / span * (h - bottom - top)
        pts = np.stack([xs, ys], 1).round().astype(np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, tuple(int(v) for v in p), 3, colour, -1)
        last = f"{values[-1]:.3f}" if len(values) else "-"
        text = f"{label} [{lo:.3f}..{hi:.3f}] last {last}"
        cv2.putText(
            img,
            text,
            (left + 5 + 185 * n, 20),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            colour,
            1,
            cv2.LINE_AA,
        )
    cv2.imwrite(str(png_path), img)


def _four(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def train_jsc(record: dict) -> float | None:
    """An epoch's JSC on the fixed training subset (None when the run did not score it)."""
    return (record.get("train_eval") or {}).get("jsc")


def card_curve(log: list[dict]) -> list[dict]:
    """Each epoch of ``log.jsonl``'s records as phase, rate, train JSC, val JSC and val DSC.

    Train JSC is the fixed unaugmented subset's (:func:`train_jsc`).
    """
    return [{"epoch": r["epoch"], "size": r["size"], "kind": r["kind"], "lr": r["lr"],
             "train_jsc": _four(train_jsc(r)),
             "val_jsc": _four(r["val"]["jsc"]), "val_dsc": _four(r["val"]["dsc"])}
            for r in log]


def curve_records(curve: list[dict]) -> list[dict]:
    """:func:`card_curve`'s rows back in the shape of ``log.jsonl``'s records.

    For what reads those (``slsnet.progress --against``); only the fields the card keeps are there.
    """
    return [{"epoch": c["epoch"], "size": c["size"], "kind": c["kind"], "lr": c["lr"],
             "train_eval": None if c["train_jsc"] is None else {"jsc": c["train_jsc"]},
             "val": {"jsc": c["val_jsc"], "dsc": c["val_dsc"]}} for c in curve]
