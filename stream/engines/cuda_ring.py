"""The CUDA engine's ring: a slot's buffers, events and graphs, and how frames are batched.

A :class:`Slot` holds one batch's pinned and device buffers, its events and its CUDA graphs;
:func:`chunks` cuts frames into batches, :func:`graph_sizes` / :func:`graph_for` pick the graph
a batch replays, and :func:`pinned_tensor` says whether a frame can be uploaded from where it
lies.

Only :mod:`stream.engines.cuda` uses these; they are apart so that each file reads on its own.
"""

from __future__ import annotations

import numpy as np
import torch

from stream.frame import Frame

_EVENTS = ("up0", "up1", "comp0", "comp1", "down0", "down1")


def graph_sizes(batch: int) -> list[int]:
    """The batch sizes that get a CUDA graph: the powers of two below ``batch``, and ``batch``.

    A batch of n frames replays the smallest graph that holds n (:func:`graph_for`), so a single
    live frame or keyframe computes one frame, not ``batch`` (at most twice the work it needs).
    """
    return [1 << i for i in range(max(batch - 1, 0).bit_length()) if 1 << i < batch] + [batch]


def graph_for(count: int, sizes: list[int]) -> int:
    """The smallest of ``sizes`` (ascending) that holds ``count`` frames."""
    return next(n for n in sizes if n >= count)


def chunks(frames: list[Frame], batch: int) -> list[list[Frame]]:
    """Consecutive runs of same-size frames, each at most ``batch`` long (order kept)."""
    out: list[list[Frame]] = []
    for frame in frames:
        last = out[-1] if out else None
        if last is None or len(last) == batch or last[0].size_wh != frame.size_wh:
            out.append([frame])
        else:
            last.append(frame)
    return out


class Pending:
    """A submitted batch; :meth:`CudaEngine.collect` fills its frames."""

    def __init__(self, frames: list[Frame], slot: Slot, masks: bool) -> None:
        self.frames, self.slot, self.done, self.masks = frames, slot, False, masks


def pinned_tensor(image: np.ndarray) -> torch.Tensor | None:
    """``image`` as a tensor on the same memory when that memory is page-locked, else None.

    Such a frame is uploaded from where it lies, asynchronously, with no copy on the host.
    """
    if not image.flags.c_contiguous:
        return None
    tensor = torch.from_numpy(image)
    return tensor if tensor.is_pinned() else None


class Slot:
    """One ring entry: pinned host buffers, device buffers, events, and its CUDA graphs."""

    def __init__(self, batch: int, size_wh: tuple[int, int], size: int, device, kernels) -> None:
        w, h = size_wh
        self.host_in = torch.empty((batch, h, w, 3), dtype=torch.uint8, pin_memory=True)
        self.host_prob = torch.empty((batch, size, size), dtype=torch.float32, pin_memory=True)
        self.host_mask = torch.empty((batch, h, w), dtype=torch.uint8, pin_memory=True)
        self.dev_in = torch.zeros((batch, h, w, 3), dtype=torch.uint8, device=device)
        self.dev_prob = torch.zeros((batch, size, size), dtype=torch.float32, device=device)
        self.dev_mask = torch.zeros((batch, h, w), dtype=torch.uint8, device=device)
        self.np_in, self.np_prob, self.np_mask = (
            t.numpy() for t in (self.host_in, self.host_prob, self.host_mask)
        )
        # what the kernels take: CuPy views (DLPack) or the tensors themselves
        self.k_in, self.k_prob, self.k_mask = (
            kernels.view(t) for t in (self.dev_in, self.dev_prob, self.dev_mask)
        )
        self.ev = {name: torch.cuda.Event(enable_timing=True) for name in _EVENTS}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}  # frames computed → its graph
        self.pending: Pending | None = None
        self.stage_ms = 0.0
        self.sources: list[torch.Tensor] = []  # what each row is uploaded from
