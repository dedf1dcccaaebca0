"""Shades of Grey colour constancy as the generator's first, parameter-free layer.

Dermoscopes light the skin differently, and the Shades of Grey family (Finlayson & Trezzi,
2004) removes a global colour cast: each channel is scaled so that the image's Minkowski
p-mean of it is the mean of the three (p = 1: grey world; p = 6: the usual choice for
dermoscopy). As a layer of the network it goes wherever the network goes — every engine, the
ONNX export, the GPU — and a checkpoint's config says whether its network was trained with it.
"""

from __future__ import annotations

import torch
from torch import nn

from slsnet.config import INPUT_MEAN, INPUT_STD

FLOOR = 1e-3  # a channel's p-mean below this (a black channel) is not scaled up without bound


class GreyBalance(nn.Module):
    """Scale each image's channels so that their Minkowski p-means are equal.

    Args:
        p: the norm's exponent, p ≥ 1.

    Input and output: B×3×H×W normalised as the network expects (``[-1, 1]``). The p-means are
    taken over each image's own pixels, in float32 whatever the input's precision, and the
    scaled image is clipped to the range of a real image.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 1 <= p < float("inf"):
            raise ValueError(f"the Shades of Grey exponent p must be finite and at least 1, "
                             f"not {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×3×H×W. Returns: B×3×H×W, the same dtype."""
        rgb = (x.float() * INPUT_STD + INPUT_MEAN).clamp(0, 1)
        norm = rgb.pow(self.p).mean(dim=(2, 3), keepdim=True).pow(1 / self.p)  # B×3×1×1
        gain = norm.mean(dim=1, keepdim=True) / norm.clamp_min(FLOOR)
        out = (rgb * gain).clamp(0, 1)
        return ((out - INPUT_MEAN) / INPUT_STD).to(x.dtype)

    def extra_repr(self) -> str:
        """Shown in the module's repr."""
        return f"p={self.p:g}"
