"""Building blocks of SLSNet: attention modules, downsampler, factorized block, multiscale stem.

Shapes in docstrings use B (batch), C (channels), H×W (rows × columns), N = H·W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CAM(nn.Module):
    """Channel attention module (paper eq. 1–2): ``out = γ·softmax(A·Aᵀ)·A + A``.

    The only parameter is the gate γ, initialised to 0 so that the module starts as the
    identity. The C×C energies sum over all N positions and overflow half precision, so
    the attention is always computed in float32.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×C×H×W. Returns: B×C×H×W."""
        b, c, h, w = x.shape
        a = x.reshape(b, c, h * w).float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            attn = torch.softmax(torch.bmm(a, a.transpose(1, 2)), dim=-1)  # B×C×C
            if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
                out = torch.bmm(attn, a)
            else:  # (attn·A)ᵀ = Aᵀ·attnᵀ: the product comes out in x's NHWC order, no copy
                out = torch.bmm(a.transpose(1, 2), attn.transpose(1, 2)).transpose(1, 2)
        return x + (self.gamma * out.reshape(b, c, h, w)).to(x.dtype)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class PAM(nn.Module):
    """Position attention module (paper eq. 3–4): ``out = η·D·softmax(BᵀC)ᵀ + A``.

    B (keys), C (queries) and D (values) come from 1×1 conv + BN + ReLU; B and C have
    C/``reduction`` channels (DANet). The softmax over positions is exact: no 1/√d scaling.
    It runs as one fused ``scaled_dot_product_attention`` with ``scale=1``; queries and keys
    are zero-padded to the value width so that fused kernels (which want equal head sizes)
    apply, which leaves every dot product unchanged. The fused kernels keep a float32
    running softmax, so half precision does not overflow where a plain bmm would.

    ``attention`` (set per instance, on a copy, by :mod:`slsnet.onnx_export` only) replaces
    the fused call with another exact form of the same attention, ``attention(q, k, v)`` on the
    unpadded B×N×C' queries and keys and B×N×C values (:func:`plain_attention`, or an operator
    that the exporter maps to ONNX Runtime's own kernel): on the CPU the padding only
    multiplies the QKᵀ work.

    ``pool`` (set the same way, by :func:`slsnet.onnx_export.export_copy` only) makes the
    attention an approximation: every query attends to the keys and values averaged over
    pool×pool cells, pool² times fewer (the asymmetric form of Zhu et al. 2019, applied to the
    trained weights). It is the exact attention with every key of a cell given the weight
    ``exp(q·k̄)`` of the cell's mean key instead of its own ``exp(q·kᵢ)`` (the cell's pool²
    keys then count as one: the factor cancels in the softmax), so it is close where keys vary
    little over a cell. Forms that use it are checked by their masks
    (:mod:`stream.engines.cpu_choice`).
    """

    attention = None  # export hook; the class default keeps every other use on the fused path
    pool = 1  # export hook: >1 attends to keys and values averaged over pool×pool cells

    def __init__(self, channels: int, *, reduction: int = 8) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.query = _conv_bn_relu(channels, inner)
        self.key = _conv_bn_relu(channels, inner)
        self.value = _conv_bn_relu(channels, channels)
        self.eta = nn.Parameter(torch.zeros(1))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """The attention term before the gate. Args: x: B×C×H×W. Returns: B×C×H×W."""
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # B×N×C'
        keys, values = self.key(x), self.value(x)
        if self.pool > 1:  # an approximation (class docstring): N/pool² keys for N queries
            keys, values = F.avg_pool2d(keys, self.pool), F.avg_pool2d(values, self.pool)
        k = keys.flatten(2).transpose(1, 2)  # B×M×C'
        v = values.flatten(2).transpose(1, 2)  # B×M×C
        if self.attention is not None:
            return self.attention(q, k, v).transpose(1, 2).reshape(b, c, h, w)
        # Fused CPU/GPU kernels want a unit stride on the last axis, else SDPA falls back to
        # the slow math path that materialises the N×N map.
        v = v.contiguous()
        pad = c - q.shape[-1]
        q = F.pad(q, (0, pad)) if pad > 0 else q.contiguous()
        k = F.pad(k, (0, pad)) if pad > 0 else k.contiguous()
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)
        return out[:, 0].transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×C×H×W. Returns: B×C×H×W."""
        return self.eta * self.attend(x) + x


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q·kᵀ)·v`` as bmm → softmax → bmm, scale 1: PAM's attention written out.

    Materialises the B×N×N map in float32: for export and tests, not for half precision.

    Args:
        q: B×N×C' queries. k: B×N×C' keys. v: B×N×C values.

    Returns:
        B×N×C.
    """
    return torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1), v)


def pam_reference(pam: PAM, x: torch.Tensor) -> torch.Tensor:
    """The paper's PAM formula written out with an explicit N×N map (for tests only)."""
    b, c, h, w = x.shape
    q = pam.query(x).flatten(2)  # B×C'×N  (the paper's C)
    k = pam.key(x).flatten(2)  # B×C'×N  (the paper's B)
    v = pam.value(x).flatten(2)  # B×C×N   (the paper's D)
    s = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # B×N×N: s[j, i] over i
    out = torch.bmm(v, s.transpose(1, 2)).reshape(b, c, h, w)
    return pam.eta * out + x


class Downsampler(nn.Module):
    """ERFNet downsampler: concat(conv3×3 stride 2, maxpool 2×2) → BN → ReLU. Halves H and W."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout - cin, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×Cin×H×W. Returns: B×Cout×H/2×W/2."""
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class FactorizedBlock(nn.Module):
    """ERFNet non-bottleneck-1D residual block: two 3×1/1×3 pairs, the second one dilated."""

    def __init__(self, channels: int, *, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        c, d = channels, dilation
        self.conv3x1_1 = nn.Conv2d(c, c, (3, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(c, c, (1, 3), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(c, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(c, c, (3, 1), padding=(d, 0), dilation=(d, 1))
        self.conv1x3_2 = nn.Conv2d(c, c, (1, 3), padding=(0, d), dilation=(1, d))
        self.bn2 = nn.BatchNorm2d(c, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×C×H×W. Returns: B×C×H×W."""
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        y = self.dropout(self.bn2(self.conv1x3_2(y)))
        return F.relu(y + x)


class FAM(nn.Sequential):
    """Factorized-attention module (paper Fig. 4): factorized block → CAM."""

    def __init__(self, channels: int, *, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__(FactorizedBlock(channels, dilation=dilation, dropout=dropout), CAM())


class MultiScaleStem(nn.Module):
    """Multiscale block (paper Fig. 1): per scale resize → conv3×3 → CAM, upsample, mean."""

    def __init__(self, cin: int, cout: int, scales: tuple[float, ...]) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, 3, padding=1) for _ in self.scales)
        self.cams = nn.ModuleList(CAM() for _ in self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×3×H×W. Returns: B×cout×H×W."""
        size = x.shape[-2:]
        total = None
        for scale, conv, cam in zip(self.scales, self.convs, self.cams, strict=True):
            xs = (
                x
                if scale == 1
                else F.interpolate(
                    x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=False
                )
            )
            y = cam(conv(xs))
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        return total / len(self.scales)


class UpBlock(nn.Sequential):
    """Upsampling-attention group (paper §3.2): deconv3×3 stride 2 + BN + ReLU → PAM → FAMs."""

    def __init__(self, cin: int, cout: int, *, fams: int, dropout: float, reduction: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(cout, eps=1e-3),
            nn.ReLU(inplace=True),
            PAM(cout, reduction=reduction),
            *(FAM(cout, dropout=dropout) for _ in range(fams)),
        )
