"""Preprocess: video frames (BGR, any size) → the generator's input batch.

Frames are stretched to S×S exactly as the training images were (no letterbox; area filter when
shrinking), converted to RGB and normalised to [-1, 1] by :func:`slsnet.data.to_tensor`.
Resizing happens before the colour conversion so that the conversion touches S×S pixels only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from slsnet.data import to_tensor
from slsnet.inference import resize_to_input


def to_network_rgb(images_bgr: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Stretch BGR frames to the network size and convert them to RGB.

    Args:
        images_bgr: N frames, each H×W×3 uint8 BGR (sizes may differ).
        size: S, the network's square input size.

    Returns:
        N×S×S×3 uint8 RGB.
    """
    out = np.empty((len(images_bgr), size, size, 3), np.uint8)
    for i, bgr in enumerate(images_bgr):
        cv2.cvtColor(resize_to_input(bgr, size), cv2.COLOR_BGR2RGB, dst=out[i])
    return out


def to_input_tensor(
    images_bgr: Sequence[np.ndarray],
    size: int,
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """BGR frames → the normalised N×3×S×S float32 CPU tensor the generator takes.

    Args:
        images_bgr: N frames, each H×W×3 uint8 BGR.
        size: S, the network's square input size.
        channels_last: return the tensor in ``torch.channels_last`` memory format.

    Returns:
        N×3×S×S float32 in [-1, 1], RGB channel order.
    """
    x = to_tensor(to_network_rgb(images_bgr, size))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
