"""The record that flows through the pipeline, and what a source says about its stream.

Sizes are named with their axis order: ``size_wh`` is (width, height); numpy arrays are H×W.
Times are ``time.perf_counter()`` seconds (monotonic), never wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class SourceInfo:
    """What a source knows about its stream before the first frame."""

    name: str  # "file:clip.mp4", "camera:0", ...
    size_wh: tuple[int, int]  # (width, height) of the frames it delivers
    fps: float  # nominal rate (average rate for variable-frame-rate files)
    time_base: Fraction  # seconds per PTS unit
    frame_count: int | None = None  # None when unknown (cameras, some files)
    live: bool = False  # a camera: frames may be dropped under back-pressure
    path: str | None = None  # the input file, for sinks that copy its audio


@dataclass
class Frame:
    """One video frame and everything the stages have added to it.

    Stages only add: a source fills the first block, the engine ``prob`` and ``mask``,
    render ``rendered``; each stage records its own duration in ``timings`` (milliseconds).
    """

    image: np.ndarray  # H×W×3 uint8 BGR, as captured or decoded
    index: int  # 0-based position in the source
    pts: int | None  # presentation timestamp in ``time_base`` units (None: unknown)
    time_base: Fraction
    capture_time: float  # perf_counter() when the frame entered the pipeline
    timings: dict[str, float] = field(default_factory=dict)  # stage → ms
    prob: np.ndarray | None = None  # S×S float32 lesion probability at the network size
    mask: np.ndarray | None = None  # H×W uint8 in {0, 1} at the frame size
    rendered: np.ndarray | None = None  # H×W×3 uint8 BGR with overlay, for display and video
    notes: dict[str, object] = field(default_factory=dict)  # e.g. {"reconnecting": True}

    @property
    def size_wh(self) -> tuple[int, int]:
        """(width, height) of the image."""
        return self.image.shape[1], self.image.shape[0]

    @property
    def pts_seconds(self) -> float | None:
        """Presentation time in seconds, or None when the PTS is unknown."""
        return None if self.pts is None else float(self.pts * self.time_base)
