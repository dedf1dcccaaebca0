"""Dense optical flow at the network's size, for warping probability maps from frame to frame.

Frames are stretched to S×S exactly as the network sees them, so a flow field computed there
moves an S×S probability map directly. Each thumbnail is normalised to zero mean and a fixed
contrast first: a global change of light (a flickering ring light) then leaves the flow and the
residual alone, while a different scene still leaves a large residual.

Flow convention: ``flow`` is S×S×2 float32 *backward* flow, ``current(x) ≈ previous(x + flow(x))``,
which is what ``cv2.remap`` needs to pull the previous map into the current frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from slsnet.data import resize_to_input

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
CONTRAST = 40.0  # grey levels per standard deviation in the normalised thumbnail


def thumbnail(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """H×W×3 uint8 BGR → size×size uint8 grey, stretched as for the network, light-normalised."""
    small = resize_to_input(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY), size).astype(np.float32)
    mean, std = cv2.meanStdDev(small)
    norm = (small - float(mean[0, 0])) * (CONTRAST / max(float(std[0, 0]), 1.0)) + 128.0
    return np.clip(norm, 0, 255).astype(np.uint8)


def identity_map(size: int) -> np.ndarray:
    """S×S×2 float32 map of each pixel's own (x, y): the start of an accumulated warp."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.dstack([xs, ys])


def remap(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sample ``image`` (S×S or S×S×C float32) at absolute ``coords`` (S×S×2), edges replicated."""
    return cv2.remap(image, coords, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class Motion:
    """How the current frame relates to the previous one."""

    coords: np.ndarray  # S×S×2 float32: where each current pixel was in the previous frame
    confidence: np.ndarray  # S×S float32 in [0, 1]: how well the previous frame explains it
    residual: float  # mean absolute grey error after warping (normalised grey levels)
    cut: bool  # a different scene or a change too large to warp across


class FlowTracker:
    """Backward DIS optical flow between consecutive frames, with scene-cut detection.

    Args:
        size: S, the side of the thumbnails (the network input size: flow moves S×S maps).
        preset: DIS preset, a key of ``PRESETS``.
        cut_residual: mean residual (grey levels) above which the frame counts as a cut.
        sigma: residual (grey levels) at which a pixel's confidence falls to 1/e.
    """

    def __init__(
        self,
        size: int = 128,
        *,
        preset: str = "ultrafast",
        cut_residual: float = 22.0,
        sigma: float = 24.0,
    ):
        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose from {', '.join(PRESETS)}")
        self.size, self.cut_residual, self.sigma = size, cut_residual, sigma
        self.dis = cv2.DISOpticalFlow_create(PRESETS[preset])
        self.grid = identity_map(size)
        self.prev: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous frame: the next ``track`` starts afresh."""
        self.prev = None

    def track(self, image_bgr: np.ndarray) -> Motion | None:
        """Motion from the previous frame to this one (None on the first frame after a reset).

        Args:
            image_bgr: H×W×3 uint8 BGR frame of any size.

        Returns:
            The motion, whose ``cut`` says whether it may be trusted at all.
        """
        cur = thumbnail(image_bgr, self.size)
        prev, self.prev = self.prev, cur
        if prev is None:
            return None
        flow = self.dis.calc(cur, prev, None)
        coords = self.grid + flow
        err = np.abs(cur.astype(np.float32) - remap(prev.astype(np.float32), coords))
        residual = float(err.mean())
        err = cv2.blur(err, (5, 5))  # one bad pixel is noise; a bad patch is an occlusion
        confidence = np.exp(-err / self.sigma).astype(np.float32)
        return Motion(coords, confidence, residual, residual > self.cut_residual)


def compose(acc: np.ndarray, motion: Motion) -> np.ndarray:
    """Chain warps: ``acc`` maps frame t−1 pixels to a keyframe; the result maps frame t pixels.

    Warping a probability map once through the chained coordinates avoids the blur that
    warping it again on every frame would pile up.
    """
    return remap(acc, motion.coords)
