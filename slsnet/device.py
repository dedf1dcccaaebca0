"""The one place a ``--device auto|cpu|cuda`` flag becomes a ``torch.device``."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """An unknown device name, or ``cuda`` where no CUDA GPU is usable."""


def resolve_device(spec: str) -> torch.device:
    """``auto`` → the current CUDA GPU if one is usable, else the CPU; ``cpu``; ``cuda``.

    Raises:
        DeviceError: an unknown name, or ``cuda`` on a machine without a usable GPU.
    """
    if spec not in DEVICES:
        raise DeviceError(f"unknown device {spec!r}; choose from {', '.join(DEVICES)}")
    if spec == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if spec == "cuda":
        raise DeviceError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    return torch.device("cpu")
