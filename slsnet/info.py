"""``python -m slsnet.info``: parameters and conv/deconv multiply-accumulates of SLSNet.

The paper counts only convolution and deconvolution MACs (attention matmuls are not in its
0.90 G), and so does this tool; the attention matmuls are reported on their own line.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from slsnet.config import SLSNetConfig
from slsnet.discriminator import build_discriminator
from slsnet.generator import build_generator


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_conv_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Conv and transposed-conv multiply-accumulates of one forward pass on ``inputs``."""
    total = 0

    def conv_hook(m: nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def deconv_hook(m: nn.ConvTranspose2d, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += args[0].numel() * (m.out_channels // m.groups) * kh * kw

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(deconv_hook))
        elif isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
    try:
        with torch.inference_mode():
            module.eval()(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def describe(size: int = 128, config: SLSNetConfig | None = None) -> dict:
    """Parameter and MAC counts of generator and discriminator at ``size``×``size`` (batch 1)."""
    config = config or SLSNetConfig()
    gen, disc = build_generator(config=config), build_discriminator(config=config)
    image = torch.zeros(1, config.in_channels, size, size)
    mask = torch.zeros(1, 1, size, size)
    return {
        "size": size,
        "generator": {"params": count_params(gen), "conv_macs": count_conv_macs(gen, image)},
        "discriminator": {
            "params": count_params(disc),
            "conv_macs": count_conv_macs(disc, image, mask),
        },
        "paper_generator_128": {"params": 2.35e6, "conv_macs": 0.90e9},
    }


def main(argv: list[str] | None = None) -> int:
    """Print the counts as a table, or as JSON with ``--json``."""
    parser = argparse.ArgumentParser(prog="python -m slsnet.info", description=__doc__)
    parser.add_argument("--size", type=int, default=128, help="square input size (multiple of 8)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.size < 8 or args.size % 8:
        parser.error(f"--size must be a positive multiple of 8, got {args.size}")
    info = describe(args.size)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"SLSNet at {args.size}×{args.size}")
    table.add_column("network")
    table.add_column("parameters", justify="right")
    table.add_column("conv/deconv MACs", justify="right")
    for name in ("generator", "discriminator"):
        row = info[name]
        table.add_row(name, f"{row['params'] / 1e6:.3f} M", f"{row['conv_macs'] / 1e9:.3f} G")
    table.add_row("paper generator (128)", "2.35 M", "0.90 G", style="dim")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
