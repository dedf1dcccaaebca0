"""Running a generator on images of any size: stretch to the network size, predict, resize back.

With ``tta`` the network runs on each image and its three mirror images (up–down, left–right,
both), and the four probability maps, each mirrored back, are averaged: test-time augmentation
at four times the network's cost. A dermatoscope image has no up or left, and the network was
trained on mirrored images, so each mirror is as good a question as the image itself; their
mean is steadier than any one (docs/benchmarks.md has what it gains).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


MIRRORS = ((False, False), (False, True), (True, False), (True, True))
"""The (up–down, left–right) flips of test-time augmentation: the image and its mirror images."""


def mirror(image: np.ndarray, flip: tuple[bool, bool]) -> np.ndarray:
    """``image`` (H×W or H×W×C) flipped up–down and/or left–right: a view; its own inverse."""
    up_down, left_right = flip
    return image[:: -1 if up_down else 1, :: -1 if left_right else 1]


def mirror_mean(
    predict: Callable[[list[np.ndarray]], Sequence[np.ndarray]], images: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """The mean of ``predict`` over each image and its mirror images, each map mirrored back.

    Args:
        predict: images (each H×W×3, contiguous) → one S×S probability map each; it is called
            once, with every mirror of every image (4·N), so a batching engine keeps batching.
        images: N images of any sizes.

    Returns:
        N float32 S×S maps, in the images' order.
    """
    views = [np.ascontiguousarray(mirror(image, flip)) for flip in MIRRORS for image in images]
    probs = predict(views)
    n = len(images)
    return [
        (sum(mirror(probs[k * n + i], flip) for k, flip in enumerate(MIRRORS)) / len(MIRRORS))
        .astype(np.float32)
        for i in range(n)
    ]


@torch.inference_mode()
def predict_net(
    generator: Generator, batch: np.ndarray, device: torch.device, *, tta: bool = False
) -> np.ndarray:
    """N×S×S×3 uint8 RGB at the network size → N×S×S float32 probabilities.

    Args:
        tta: the mean over each image and its three mirror images (:func:`mirror_mean`).
    """
    if tta:
        return np.stack(mirror_mean(lambda views: predict_net(generator, np.stack(views), device),
                                    list(batch)))
    x = to_tensor(batch).to(device)
    return generator(x)[:, 0].float().cpu().numpy()


def predict_probs(
    generator: Generator,
    images: Sequence[np.ndarray],
    *,
    device: torch.device,
    size: int = 128,
    batch_size: int = 16,
    tta: bool = False,
) -> list[np.ndarray]:
    """Probability maps (H×W float32, each at its image's own size) for RGB uint8 images.

    Args:
        tta: average each image's map with its mirror images' (4× the network's time).
    """
    generator.eval()
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        small = np.stack([resize_to_input(im, size) for im in chunk])
        probs = predict_net(generator, small, device, tta=tta)
        out.extend(
            resize_prob(p, (im.shape[1], im.shape[0])) for p, im in zip(probs, chunk, strict=True)
        )
    return out
