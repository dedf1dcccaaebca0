"""Pictures of predictions: contours over images, and a grid for evaluation reports."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TRUTH_BGR = (0, 200, 0)
PRED_BGR = (0, 0, 255)


def draw_contour(
    rgb: np.ndarray, mask: np.ndarray, colour_bgr: tuple[int, int, int], thickness: int = 2
) -> np.ndarray:
    """A BGR copy of ``rgb`` with the outline of ``mask`` drawn on it."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(out, contours, -1, colour_bgr, thickness, cv2.LINE_AA)
    return out


def draw_grid(
    rgbs: list, truths: list, preds: list, path: str | Path, *, cell: int = 160, limit: int = 24
) -> None:
    """Write a PNG, a row per image: image, truth outline (green), prediction outline (red)."""
    rows = []
    for rgb, truth, pred in list(zip(rgbs, truths, preds, strict=True))[:limit]:
        tiles = [
            cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
            draw_contour(rgb, truth, TRUTH_BGR),
            draw_contour(rgb, pred, PRED_BGR),
        ]
        rows.append(
            np.hstack([cv2.resize(t, (cell, cell), interpolation=cv2.INTER_AREA) for t in tiles])
        )
    cv2.imwrite(str(path), np.vstack(rows) if rows else np.zeros((cell, 3 * cell, 3), np.uint8))
