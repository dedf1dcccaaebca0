"""A video's display matrix (rotation, and the mirror some phones add) as players apply it.

A decoded picture may carry a 3×3 display matrix (FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX``,
16.16 fixed point, row-major). Players turn it into quarter turns and flips; this module does
the same, by the rules of FFmpeg's own autorotation (``fftools/ffmpeg_filter.c``): the angle
is read from the first row, and the sign of the other entries tells a mirrored matrix from a
plain rotation. A matrix that is not a quarter turn (a 30° tilt) is left unapplied and said so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import av
import numpy as np
from av.sidedata.sidedata import Type

IDENTITY = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)


@dataclass(frozen=True)
class Orientation:
    """How to turn a decoded H×W picture into what a player shows."""

    clockwise: int = 0  # quarter turns clockwise: 0, 90, 180 or 270 degrees
    mirror: str | None = None  # then "left-right" or "top-bottom", or None
    unapplied: float | None = None  # an angle that is not a quarter turn (left as decoded)

    @property
    def identity(self) -> bool:
        """True when the picture is shown as decoded."""
        return self.clockwise == 0 and self.mirror is None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """H×W×C → the displayed picture (a view; the caller makes it contiguous)."""
        if self.clockwise:
            image = np.rot90(image, -(self.clockwise // 90))  # rot90 turns counter-clockwise
        if self.mirror == "left-right":
            image = image[:, ::-1]
        elif self.mirror == "top-bottom":
            image = image[::-1]
        return image

    def describe(self) -> str:
        """'rotated 90° clockwise and mirrored left-right', and the like."""
        parts = []
        if self.clockwise == 270:
            parts.append("rotated 90° counter-clockwise")
        elif self.clockwise:
            parts.append(f"rotated {self.clockwise}° clockwise")
        if self.mirror:
            parts.append(f"mirrored {self.mirror}")
        return " and ".join(parts) or "shown as decoded"


def display_matrix(vf: av.VideoFrame) -> tuple[int, ...] | None:
    """The frame's 9 display-matrix entries, or None when it has none."""
    data = vf.side_data.get(Type.DISPLAYMATRIX)
    if data is None:
        return None
    entries = tuple(int(v) for v in np.frombuffer(bytes(data), dtype="<i4", count=9))
    return None if entries == IDENTITY else entries


def orientation(matrix: tuple[int, ...] | None) -> Orientation:
    """The quarter turns and flip a player applies for ``matrix`` (FFmpeg's rules)."""
    if matrix is None:
        return Orientation()
    m0, m1, m3, m4 = matrix[0], matrix[1], matrix[3], matrix[4]
    if math.hypot(m0, m3) == 0 or math.hypot(m1, m4) == 0:
        return Orientation()  # a degenerate matrix: players ignore it too
    theta = round(math.degrees(math.atan2(m1 / math.hypot(m1, m4), m0 / math.hypot(m0, m3))))
    theta %= 360  # clockwise degrees
    if abs(theta - 90) < 1:
        # transpose: a clockwise turn mirrored left-right, else the plain clockwise turn
        return Orientation(90, "left-right") if m3 > 0 else Orientation(90)
    if abs(theta - 270) < 1:
        return Orientation(90, "top-bottom") if m3 < 0 else Orientation(270)
    if abs(theta - 180) < 1:
        if m0 < 0 and m4 < 0:
            return Orientation(180)
        if m0 < 0:
            return Orientation(0, "left-right")
        return Orientation(0, "top-bottom") if m4 < 0 else Orientation()
    if theta < 1 or theta > 359:
        return Orientation(0, "top-bottom") if m4 < 0 else Orientation()
    return Orientation(unapplied=float(theta))
