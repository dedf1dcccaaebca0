"""Preprocessing and mask resizing as separable resampling taps, and the numpy reference.

Both directions are separable resampling with precomputed taps per axis:
``out[y, x] = Σ_i Σ_j wy[y, i]·wx[x, j]·in[iy[y, i], ix[x, j]]`` (the inner sum runs along the row).

- Frame → network input: BGR uint8 H×W×3 → RGB, stretch-resized to S×S, normalised to [-1, 1].
  The taps reproduce ``slsnet.inference.resize_to_input``: OpenCV's INTER_AREA (exact fractional
  box filter) when the frame is at least S×S, else INTER_LINEAR (half-pixel centres, clamped).
  OpenCV rounds its resized pixels to uint8; these implementations keep the float, so they differ
  from the CPU path by at most half a grey level (area) or one grey level (OpenCV's fixed-point
  linear weights), i.e. ≤ 0.004 / ≤ 0.008 after normalisation.
- Probability → mask: S×S float32 → H×W by INTER_LINEAR taps (``cv2.resize`` on float32), then
  ``> threshold`` (as ``slsnet.evaluate`` and the CPU engine do).

:func:`preprocess_reference` / :func:`mask_reference` are the definition (numpy, tested against
OpenCV on any machine); ``torch_kernels.TorchKernels`` (dense matrices, torch ops) and
``gpu_kernels.CupyKernels`` (CuPy RawKernels, the CUDA engine's) compute the same taps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slsnet.config import INPUT_MEAN, INPUT_STD

# v_normalised = v_uint8 · NORM_SCALE + NORM_BIAS  ==  (v / 255 − mean) / std
NORM_SCALE = 1.0 / (255.0 * INPUT_STD)
NORM_BIAS = -INPUT_MEAN / INPUT_STD


@dataclass(frozen=True)
class Taps:
    """Resampling weights along one axis: ``out[i] = Σ_k weight[i, k] · in[index[i, k]]``.

    Rows with fewer taps than K are padded with weight 0 on a valid index, so kernels loop over
    all K taps without bounds checks.
    """

    index: np.ndarray  # dst×K int32, each in [0, src)
    weight: np.ndarray  # dst×K float32
    src: int  # length of the input axis

    @property
    def k(self) -> int:
        """Taps per output sample."""
        return self.index.shape[1]

    def matrix(self) -> np.ndarray:
        """The same taps as a dense dst×src float32 matrix."""
        m = np.zeros((self.index.shape[0], self.src), np.float32)
        rows = np.repeat(np.arange(self.index.shape[0]), self.k)
        np.add.at(m, (rows, self.index.ravel()), self.weight.ravel())
        return m


def _pack(rows: list[list[tuple[int, float]]], src: int) -> Taps:
    k = max(len(r) for r in rows)
    index = np.empty((len(rows), k), np.int32)
    weight = np.zeros((len(rows), k), np.float32)
    for i, r in enumerate(rows):
        index[i] = [t[0] for t in r] + [r[-1][0]] * (k - len(r))
        weight[i, : len(r)] = [t[1] for t in r]
    return Taps(index, weight, src)


def _cv_scale(src: int, dst: int) -> float:
    # cv::resize computes 1 / (dst / src), which can differ from src / dst in the last bit
    return 1.0 / (dst / src)


def area_taps(src: int, dst: int) -> Taps:
    """OpenCV INTER_AREA for shrinking (``computeResizeAreaTab``): an exact fractional box filter.

    Output pixel i covers source interval [i·s, (i+1)·s), s = src/dst; partial pixels at the
    ends weigh by their covered fraction (slivers under 1e-3 are skipped, as in OpenCV).
    """
    if dst > src:
        raise ValueError(f"area taps only shrink ({src} → {dst})")
    scale = _cv_scale(src, dst)
    rows = []
    for d in range(dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s2 = min(math.floor(f2), src - 1)
        s1 = min(math.ceil(f1), s2)
        taps = []
        if s1 - f1 > 1e-3:
            taps.append((s1 - 1, (s1 - f1) / cell))
        taps.extend((s, 1.0 / cell) for s in range(s1, s2))
        if f2 - s2 > 1e-3:
            taps.append((s2, min(f2 - s2, 1.0, cell) / cell))
        rows.append(taps)
    return _pack(rows, src)


def linear_taps(src: int, dst: int) -> Taps:
    """OpenCV INTER_LINEAR: half-pixel centres, source coordinate clamped to [0, src − 1]."""
    scale = _cv_scale(src, dst)
    rows = []
    for d in range(dst):
        f = np.float32((d + 0.5) * scale - 0.5)  # OpenCV computes this in float
        s = math.floor(f)
        frac = np.float32(f - np.float32(s))
        if s < 0:
            s, frac = 0, np.float32(0)
        if s >= src - 1:
            s, frac = src - 1, np.float32(0)
        rows.append([(s, np.float32(1) - frac), (min(s + 1, src - 1), frac)])
    return _pack(rows, src)


def input_taps(size_wh: tuple[int, int], size: int) -> tuple[Taps, Taps]:
    """(x taps, y taps) from a W×H frame to the S×S network input, as ``resize_to_input``."""
    w, h = size_wh
    taps = area_taps if (h >= size and w >= size) else linear_taps
    return taps(w, size), taps(h, size)


def output_taps(size: int, size_wh: tuple[int, int]) -> tuple[Taps, Taps]:
    """(x taps, y taps) from the S×S probability to a W×H mask (bilinear)."""
    w, h = size_wh
    return linear_taps(size, w), linear_taps(size, h)


def _separable(img: np.ndarray, tx: Taps, ty: Taps) -> np.ndarray:
    """N×H×W×C → N×Sy×Sx×C float64: the inner (x) sum first, then y, as the kernels do."""
    rows = img[:, ty.index]  # N×Sy×Ky×W×C
    cols = rows[:, :, :, tx.index]  # N×Sy×Ky×Sx×Kx×C
    inner = np.einsum("nykxjc,xj->nykxc", cols.astype(np.float64), tx.weight.astype(np.float64))
    return np.einsum("nykxc,yk->nyxc", inner, ty.weight.astype(np.float64))


def preprocess_reference(bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 frames (H×W×3 or N×H×W×3) → N×3×S×S float32 normalised RGB network input."""
    batch = bgr[None] if bgr.ndim == 3 else bgr
    tx, ty = input_taps((batch.shape[2], batch.shape[1]), size)
    rgb = _separable(batch, tx, ty)[..., ::-1]  # N×S×S×3
    return (rgb * NORM_SCALE + NORM_BIAS).transpose(0, 3, 1, 2).astype(np.float32)


def upsample_reference(prob: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """S×S float32 probability → H×W float32 (bilinear, as ``cv2.resize`` INTER_LINEAR)."""
    tx, ty = output_taps(prob.shape[0], size_wh)
    return _separable(prob[None, :, :, None], tx, ty)[0, :, :, 0].astype(np.float32)


def mask_reference(prob: np.ndarray, size_wh: tuple[int, int], threshold: float) -> np.ndarray:
    """S×S probability → H×W uint8 {0, 1} mask: bilinear resize, then ``> threshold``."""
    return (upsample_reference(prob, size_wh) > threshold).astype(np.uint8)
