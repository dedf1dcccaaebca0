"""The SLSNet generator: multiscale stem → attention encoder → CAM+PAM fork → decoder."""

from __future__ import annotations

import torch
from torch import nn

from slsnet.blocks import CAM, FAM, PAM, Downsampler, FactorizedBlock, MultiScaleStem, UpBlock
from slsnet.colour_constancy import GreyBalance
from slsnet.config import SLSNetConfig


class Fork(nn.Module):
    """One factorized block, then a CAM branch and a PAM branch, summed (paper Fig. 1)."""

    def __init__(self, channels: int, *, reduction: int) -> None:
        super().__init__()
        self.block = FactorizedBlock(channels)
        self.cam = CAM()
        self.pam = PAM(channels, reduction=reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×C×H×W. Returns: B×C×H×W."""
        y = self.block(x)
        return self.cam(y) + self.pam(y)


class Generator(nn.Module):
    """Maps a normalised RGB image to a lesion probability map of the same size.

    Args:
        config: widths, depths, dropout and the input's colour constancy (see
            :class:`SLSNetConfig`).

    Input: B×3×H×W in [-1, 1] (H and W divisible by 8). Output: B×1×H×W probabilities.
    """

    def __init__(self, config: SLSNetConfig) -> None:
        super().__init__()
        self.config = config
        c0 = config.stem_channels
        c1, c2, c3 = config.widths
        r = config.pam_reduction
        self.grey = GreyBalance(config.grey_p) if config.grey_p else nn.Identity()
        self.stem = MultiScaleStem(config.in_channels, c0, config.scales)
        self.down1 = nn.Sequential(Downsampler(c0, c1), PAM(c1, reduction=r))
        self.down2 = nn.Sequential(Downsampler(c1, c2), PAM(c2, reduction=r))
        self.mid = nn.Sequential(
            *(FAM(c2, dropout=config.dropout_mid) for _ in range(config.mid_fams))
        )
        self.down3 = nn.Sequential(Downsampler(c2, c3), PAM(c3, reduction=r))
        self.deep = nn.Sequential(
            *(FAM(c3, dilation=d, dropout=config.dropout_deep) for d in config.deep_dilations)
        )
        self.fork = Fork(c3, reduction=r)
        self.up1 = UpBlock(
            c3, c2, fams=config.decoder_fams, dropout=config.dropout_decoder, reduction=r
        )
        self.up2 = UpBlock(
            c2, c0, fams=config.decoder_fams, dropout=config.dropout_decoder, reduction=r
        )
        self.head = nn.ConvTranspose2d(c0, 1, 3, stride=2, padding=1, output_padding=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores. Args: x: B×3×H×W. Returns: B×1×H×W."""
        x = self.stem(self.grey(x))  # B×16×H×W
        x = self.down2(self.down1(x))  # B×64×H/4×W/4
        x = self.down3(self.mid(x))  # B×128×H/8×W/8
        x = self.fork(self.deep(x))
        x = self.up2(self.up1(x))  # B×16×H/2×W/2
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×3×H×W. Returns: B×1×H×W lesion probabilities."""
        return torch.sigmoid(self.logits(x))


def build_generator(*, config: SLSNetConfig | None = None) -> Generator:
    """Build a randomly initialised SLSNet generator (keyword-only; paper defaults)."""
    return Generator(config or SLSNetConfig())
