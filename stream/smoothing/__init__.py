"""Temporal smoothing: between the engine's probability map and the final mask.

Per frame the segmenter asks ``smoother.wants_inference(frame)``, runs the network when it says
so, then calls ``smoother(frame)``, which sets ``frame.prob`` (smoothed) and thresholds it into
``frame.mask``: the one place a mask is made from a probability in a stream, because hysteresis
makes the decision depend on the previous one. ``reset()`` forgets all history.

Modes (:func:`build_smoother`): ``off`` (:class:`Identity`), ``ema`` and ``flow`` (``blend``:
the previous output blended in, moved along ``optical_flow`` for ``flow``), and ``keyframe``
(``keyframe``: the network on some frames, flow carrying its output between them).
"""

from stream.smoothing.blend import FLOW_DEFAULTS, Ema, FlowSmoother, Identity, certainty_weight
from stream.smoothing.keyframe import KEYFRAME_DEFAULTS, AsyncKeyframe, Keyframe
from stream.smoothing.modes import (
    CHOICES,
    DEFAULT_MODE,
    MODES,
    auto_reason,
    build_smoother,
    every_frame_fits,
    resolve_mode,
)

__all__ = [
    "CHOICES",
    "DEFAULT_MODE",
    "FLOW_DEFAULTS",
    "KEYFRAME_DEFAULTS",
    "MODES",
    "AsyncKeyframe",
    "Ema",
    "FlowSmoother",
    "Identity",
    "Keyframe",
    "auto_reason",
    "build_smoother",
    "certainty_weight",
    "every_frame_fits",
    "resolve_mode",
]
