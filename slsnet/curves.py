"""Training curves as a PNG, drawn with OpenCV (no plotting library needed)."""

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
