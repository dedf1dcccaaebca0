"""Where the lesion is in a mask: numpy only, so the stream's synthetic clips aim with it too."""

from __future__ import annotations

import numpy as np


def lesion_centre(mask: np.ndarray) -> tuple[float, float] | None:
    """(row, column) of the lesion pixels' mean in an H×W mask; None where there are none."""
    ys, xs = np.nonzero(mask)
    return (float(ys.mean()), float(xs.mean())) if len(ys) else None
