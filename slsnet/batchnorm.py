"""BatchNorm statistics measured afresh: what a network is scored and saved with."""

from __future__ import annotations

import copy

import numpy as np
import torch

from slsnet.data import to_tensor
from slsnet.generator import Generator


def calibrated(generator: Generator, images: np.ndarray | None, device: torch.device,
               batch_size: int = 16) -> Generator:
    """A copy of ``generator`` whose BatchNorm statistics are measured afresh on ``images``.

    The running statistics that training keeps are a moving average over batches drawn while
    the weights move; early in a run they can be far enough from the network's present state
    that the evaluated (eval-mode) network outputs no lesion at all while its training-mode
    output fits. Statistics recomputed on fixed images with the present weights (a cumulative
    average, dropout off as in use) make what is scored and saved the network as it is now; no
    random number is drawn, so training goes on exactly as without it. ``images`` ``None``: the
    generator itself, unchanged.
    """
    if images is None:
        return generator
    model = copy.deepcopy(generator).eval()
    norms = _norms(model)
    for m in norms:  # batch statistics, summed with equal weight (momentum None), dropout off
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            model(to_tensor(images[i : i + batch_size]).to(device))
    for m, original in zip(norms, (n.momentum for n in _norms(generator)), strict=True):
        m.momentum = original
        m.eval()
    return model


def _norms(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
