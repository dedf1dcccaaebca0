"""The SLSNet conditional discriminator (pix2pix PatchGAN with PAM and CAM, paper §3.3)."""

from __future__ import annotations

import torch
from torch import nn

from slsnet.blocks import CAM, PAM
from slsnet.config import SLSNetConfig


class Discriminator(nn.Module):
    """Scores (image, mask) pairs patch by patch.

    Three conv4×4 stride-2 layers (BN after all but the first, LeakyReLU 0.2), a PAM after the
    second and a CAM after the third, then a conv4×4 to one channel. ``forward`` returns logits:
    the paper's final sigmoid is folded into the BCE-with-logits loss, which is the same
    function computed without the float overflow of ``log(sigmoid(·))``.

    Input: image B×3×H×W in [-1, 1], mask B×1×H×W in [0, 1]. Output: B×1×(H/8−1)×(W/8−1).
    """

    def __init__(self, config: SLSNetConfig) -> None:
        super().__init__()
        w1, w2, w3 = config.disc_widths
        act = nn.LeakyReLU(0.2, inplace=True)
        self.net = nn.Sequential(
            nn.Conv2d(config.in_channels + 1, w1, 4, stride=2, padding=1),
            act,
            nn.Conv2d(w1, w2, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w2),
            act,
            PAM(w2, reduction=config.pam_reduction),
            nn.Conv2d(w2, w3, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w3),
            act,
            CAM(),
            nn.Conv2d(w3, 1, 4, stride=1, padding=1),
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args: image: B×3×H×W, mask: B×1×H×W. Returns: patch logits B×1×h×w."""
        return self.net(torch.cat([image, mask.to(image.dtype)], dim=1))


def build_discriminator(*, config: SLSNetConfig | None = None) -> Discriminator:
    """Build a randomly initialised SLSNet discriminator (keyword-only; paper defaults)."""
    return Discriminator(config or SLSNetConfig())
