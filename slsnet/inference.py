"""Running a generator on images of any size: stretch to the network size, predict, resize back."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from slsnet.data import resize_to_input, to_tensor
from slsnet.generator import Generator


def resize_prob(prob: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a probability map to (W, H); thresholding happens after this."""
    if prob.shape[::-1] == tuple(size_wh):
        return prob
    return cv2.resize(prob, size_wh, interpolation=cv2.INTER_LINEAR)


@torch.inference_mode()
def predict_net(generator: Generator, batch: np.ndarray, device: torch.device) -> np.ndarray:
    """N×S×S×3 uint8 RGB at the network size → N×S×S float32 probabilities."""
    x = to_tensor(batch).to(device)
    return generator(x)[:, 0].float().cpu().numpy()


def predict_probs(
    generator: Generator,
    images: Sequence[np.ndarray],
    *,
    device: torch.device,
    size: int = 128,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Probability maps (H×W float32, each at its image's own size) for RGB uint8 images."""
    generator.eval()
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        small = np.stack([resize_to_input(im, size) for im in chunk])
        probs = predict_net(generator, small, device)
        out.extend(
            resize_prob(p, (im.shape[1], im.shape[0])) for p, im in zip(probs, chunk, strict=True)
        )
    return out
