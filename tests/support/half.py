"""Half-precision tolerances derived from fp16 arithmetic, and an fp16 emulation on the CPU.

fp16 keeps 11 significant bits (unit roundoff u = 2⁻¹¹ ≈ 4.9e-4). How far that moves a network's
output depends on the network and the input, so a tolerance is derived, not guessed: the
*sensitivity* S is the change that one fp16 rounding of the inputs and the weights makes to the
output, computed in float64 (no other rounding). An fp16 run rounds at every layer, not once, so
it may differ from the exact result by :data:`FP16_ROUNDINGS` × S. The GPU tests use these bounds,
and tests that run on any CPU check them on torch's CPU half precision (fp16 storage, float32
accumulation, as cuDNN and the fused attention kernels do).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

FP16_ROUNDINGS = 4  # CPU half precision on the engine tests' frames needs up to 2.9


def round_fp16(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to the nearest fp16 value, in its own dtype."""
    return t.half().to(t.dtype)


def sensitivity(model: nn.Module, x: torch.Tensor) -> float:
    """The largest change one fp16 rounding of inputs and weights makes (in float64)."""
    exact = copy.deepcopy(model).double().eval()
    rounded = copy.deepcopy(model).half().double().eval()
    with torch.inference_mode():
        return float((rounded(round_fp16(x).double()) - exact(x.double())).abs().max())


def fp16_tolerance(model: nn.Module, x: torch.Tensor) -> float:
    """The largest difference an fp16 run of ``model`` on ``x`` may have from the exact result."""
    return FP16_ROUNDINGS * sensitivity(model, x)
