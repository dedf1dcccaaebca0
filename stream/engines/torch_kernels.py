"""Preprocessing and mask resizing with torch ops: the CUDA engine's fallback without CuPy.

The taps of ``resample`` as dense matrices (its numpy references define the results).
"""

from __future__ import annotations

import numpy as np
import torch

from stream.engines.resample import NORM_BIAS, NORM_SCALE, Taps


class TorchKernels:
    """The same taps as dense matrices: ``out_c = Ry @ in_c @ Rxᵀ`` per channel (torch ops).

    Several kernels per call instead of one, but it runs anywhere torch does: the CUDA engine's
    fallback when CuPy is missing, and the "torch" row of the preprocessing benchmark. Same
    interface as ``gpu_kernels.CupyKernels``; work goes to torch's current stream.
    """

    name = "torch"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """Tensors are used as they are."""
        return tensor

    def upload(self, tx: Taps, ty: Taps) -> tuple[torch.Tensor, torch.Tensor]:
        """(Rxᵀ: src_w×dst_w, Ry: dst_h×src_h) on the device."""
        rxt = torch.from_numpy(np.ascontiguousarray(tx.matrix().T)).to(self.device)
        return rxt, torch.from_numpy(ty.matrix()).to(self.device)

    def preprocess(self, src: torch.Tensor, taps, out: torch.Tensor, out_dtype: torch.dtype, *,
                   frames: int, stream=None) -> None:
        """Write the network input of the first ``frames`` frames.

        Args:
            src: B×H×W×3 uint8 BGR. taps: :meth:`upload` of :func:`input_taps`.
            out: B×3×S×S of ``out_dtype`` (any memory format), written in place.
        """
        rxt, ry = taps
        x = src[:frames].flip(-1).permute(0, 3, 1, 2).float()  # B×3×H×W RGB
        out[:frames].copy_((ry @ x @ rxt).mul_(NORM_SCALE).add_(NORM_BIAS))

    def postprocess(self, prob: torch.Tensor, taps, mask: torch.Tensor, threshold: float, *,
                    frames: int, stream=None) -> None:
        """Masks of the first ``frames`` frames.

        Args:
            prob: B×S×S float32. taps: :meth:`upload` of :func:`output_taps`.
            mask: B×H×W uint8, written in place with ``prob↑ > threshold``.
        """
        rxt, ry = taps
        torch.gt(ry @ prob[:frames] @ rxt, threshold, out=mask[:frames].view(torch.bool))
