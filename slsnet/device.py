"""The one place a ``--device auto|cpu|cuda`` flag becomes a ``torch.device``."""

from __future__ import annotations

import platform
from pathlib import Path

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


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (``platform`` where it does not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags(wanted: tuple[str, ...]) -> list[str]:
    """Those of the ``wanted`` /proc/cpuinfo flags this CPU reports (none off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return [f for f in wanted if f in flags]


def describe(device: torch.device) -> str:
    """What a run computes on, for logs and model cards: the GPU's name, or the CPU's."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
