"""Segmentation metrics of the paper (§4.2): ACC, DSC, JSC, SEN, SPE and JSC_th.

Scores are computed per image and then averaged (the paper's convention); ``pooled`` sums the
confusion counts over all images first. Where a ratio is 0/0 (e.g. sensitivity on an image with
no lesion, and none predicted) the score is 1: nothing was there and nothing was missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

METRICS = ("acc", "dsc", "jsc", "sen", "spe", "jsc_th")
JSC_THRESHOLD = 0.65  # ISIC 2018 rule: a JSC below this counts as 0


def _as_bool(mask) -> np.ndarray:
    if hasattr(mask, "detach"):  # torch tensor
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    return arr > 0.5 if arr.dtype.kind == "f" else arr.astype(bool)


def confusion(pred, truth) -> np.ndarray:
    """TP, FP, FN, TN of one mask pair (numpy or torch, equal shapes; floats are prob > 0.5)."""
    p, t = _as_bool(pred), _as_bool(truth)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    tp = np.count_nonzero(p & t)
    fp = np.count_nonzero(p & ~t)
    fn = np.count_nonzero(~p & t)
    return np.array([tp, fp, fn, p.size - tp - fp - fn], dtype=np.int64)


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else float(num) / float(den)


def scores(counts: np.ndarray) -> dict[str, float]:
    """All metrics, as fractions in [0, 1], from one TP, FP, FN, TN vector."""
    tp, fp, fn, tn = (int(c) for c in counts)
    jsc = _ratio(tp, tp + fp + fn)
    return {
        "acc": _ratio(tp + tn, tp + fp + fn + tn),
        "dsc": _ratio(2 * tp, 2 * tp + fp + fn),
        "jsc": jsc,
        "sen": _ratio(tp, tp + fn),
        "spe": _ratio(tn, tn + fp),
        "jsc_th": jsc if jsc >= JSC_THRESHOLD else 0.0,
    }


class MetricAccumulator:
    """Collects per-image scores; ``mean()`` is the paper's number, ``pooled()`` the dataset's."""

    def __init__(self) -> None:
        self.per_image: list[dict[str, float]] = []
        self.total = np.zeros(4, dtype=np.int64)

    def update(self, pred, truth) -> dict[str, float]:
        """Add one image; returns its scores."""
        counts = confusion(pred, truth)
        self.total += counts
        row = scores(counts)
        self.per_image.append(row)
        return row

    def mean(self) -> dict[str, float]:
        """Mean over images of each metric (0 images → all zero)."""
        if not self.per_image:
            return dict.fromkeys(METRICS, 0.0)
        return {m: float(np.mean([r[m] for r in self.per_image])) for m in METRICS}

    def median(self) -> dict[str, float]:
        """Median over images of each metric: the typical image, which few failures move."""
        if not self.per_image:
            return dict.fromkeys(METRICS, 0.0)
        return {m: float(np.median([r[m] for r in self.per_image])) for m in METRICS}

    def pooled(self) -> dict[str, float]:
        """Metrics of the summed confusion counts."""
        return scores(self.total)

    def __len__(self) -> int:
        return len(self.per_image)


SIZE_BANDS = (0.0, 0.05, 0.10, 0.20, 0.40)  # lower edges of lesion-area bands, share of the image


def size_bands(truth_area: np.ndarray, pred_area: np.ndarray, jsc: np.ndarray
               ) -> list[dict[str, float | None]]:
    """Mean JSC and the median predicted / true lesion area of images grouped by lesion size.

    Shows where a network fails: e.g. one trained without close-up framings that segments only
    part of lesions filling half the view (predicted / true well below 1), or one that blots
    out small lesions (well above 1). Bands without images are left out; ``area_ratio`` is
    None in a band that holds only lesion-free images.

    Args:
        truth_area, pred_area: per image, the share of its pixels that are lesion in the
            expert mask and in the prediction. jsc: per image JSC.
    """
    truth_area, pred_area, jsc = (np.asarray(a, dtype=np.float64)
                                  for a in (truth_area, pred_area, jsc))
    band = np.digitize(truth_area, SIZE_BANDS) - 1  # the last band takes everything above it
    rows = []
    for i, (lo, hi) in enumerate(zip(SIZE_BANDS, (*SIZE_BANDS[1:], 1.0), strict=True)):
        chosen = band == i
        if not chosen.any():
            continue
        lesion = chosen & (truth_area > 0)
        ratio = (float(np.median(pred_area[lesion] / truth_area[lesion])) if lesion.any()
                 else None)
        rows.append({"from": lo, "to": hi, "n": int(chosen.sum()),
                     "jsc": float(jsc[chosen].mean()), "area_ratio": ratio})
    return rows


CHANGE_MARGIN = 0.01  # a per-image JSC change smaller than this counts as no change


def image_changes(jsc: Sequence[float], baseline: Sequence[float],
                  margin: float = CHANGE_MARGIN) -> dict[str, int]:
    """On how many images one model's JSC is above / below another's by more than ``margin``.

    Two means can be equal while one model wins on many images and loses badly on a few; these
    counts tell the two apart. Both sequences score the same images in the same order.
    """
    diff = np.asarray(jsc, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    return {"better": int((diff > margin).sum()), "worse": int((diff < -margin).sum())}


def mean_scores(preds: Iterable, truths: Iterable) -> dict[str, float]:
    """Per-image metrics averaged over paired iterables of masks."""
    acc = MetricAccumulator()
    for p, t in zip(preds, truths, strict=True):
        acc.update(p, t)
    return acc.mean()
