"""Temporal smoothing stage: between the engine's probability map and the final mask.

The pipeline calls, per frame: ``if smoother.wants_inference(frame): engine.infer([frame])``,
then ``smoother(frame)``. A smoother may replace ``frame.prob`` and ``frame.mask`` (re-deriving the
mask from the smoothed probability), and fills ``frame.prob`` itself on frames it chose not to
send through the network (keyframe propagation). ``reset()`` forgets all history (seek, source
change, scene cut).
"""

from __future__ import annotations

import time

from stream.frame import Frame

MODES = ("off",)


class Identity:
    """``--smooth off``: every frame goes through the network and is left as it is."""

    mode = "off"

    def wants_inference(self, frame: Frame) -> bool:
        """Always run the network."""
        return True

    def __call__(self, frame: Frame) -> None:
        """Record a zero-cost stage so that the timing tables stay complete."""
        t0 = time.perf_counter()
        frame.timings["smooth"] = (time.perf_counter() - t0) * 1e3

    def reset(self) -> None:
        """Nothing to forget."""


def build_smoother(mode: str = "off", **options) -> Identity:
    """The smoother for ``--smooth MODE``."""
    if mode not in MODES:
        raise ValueError(f"unknown smoothing mode {mode!r}; choose from {', '.join(MODES)}")
    return Identity()
