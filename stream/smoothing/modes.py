"""The ``--smooth`` modes: which one ``auto`` stands for, and building a smoother by name."""

from __future__ import annotations

from stream.engines.thread import EngineThread
from stream.errors import ConfigError
from stream.smoothing.blend import Ema, FlowSmoother, Identity
from stream.smoothing.keyframe import AsyncKeyframe, Keyframe

MODES = ("off", "ema", "flow", "keyframe")
CHOICES = ("auto", *MODES)  # what a user may ask for
DEFAULT_MODE = "auto"  # chosen on the temporal benchmark (docs/benchmarks.md), see resolve_mode
EMA_OPTIONS = frozenset({"history", "floor", "threshold", "hysteresis", "cut_change"})
FLOW_OPTIONS = EMA_OPTIONS | {"size", "preset", "cut_residual", "sigma"}
OPTIONS = {
    "off": frozenset({"threshold"}),
    "ema": EMA_OPTIONS,
    "flow": FLOW_OPTIONS,
    "keyframe": FLOW_OPTIONS | {"interval", "max_interval", "fps", "headroom"},
}
KNOWN_OPTIONS = frozenset().union(*OPTIONS.values())


def resolve_mode(mode: str, *, live: bool, cpu: bool) -> str:
    """The mode ``auto`` stands for; any other mode as it is.

    On the temporal benchmark (docs/benchmarks.md) ``flow`` removes most of the excess flicker
    at no cost in accuracy, so it is the default wherever every frame goes through the network:
    files, and live sources on a GPU. On a CPU the network cannot keep up with a live camera's
    rate, and ``keyframe`` (network on keyframes, flow in between, the interval following the
    measured network time) shows every frame at a small cost in accuracy (docs/benchmarks.md).

    Args:
        mode: one of ``CHOICES``.
        live: the source is a camera (or a file played in real time): frames may not wait.
        cpu: the network runs on the CPU.
    """
    if mode not in CHOICES:
        raise ConfigError(f"unknown smoothing mode {mode!r}; choose from {', '.join(CHOICES)}")
    if mode != "auto":
        return mode
    return "keyframe" if live and cpu else "flow"


def build_smoother(mode: str = "off", *, live: bool = False, cpu: bool = True,
                   network: EngineThread | None = None, **options) -> Identity:
    """The smoother for ``--smooth MODE``.

    Args:
        mode: one of ``CHOICES`` (``auto`` is resolved by :func:`resolve_mode`).
        live: the source is live (for ``auto``).
        cpu: the network runs on the CPU (for ``auto``).
        network: for ``keyframe``: the engine on its own thread, so that the network runs beside
            the caller (:class:`~stream.smoothing.keyframe.AsyncKeyframe`); its owner closes it.
        **options: keyword options of the modes (e.g. ``size``, ``threshold``, ``interval`` and
            ``fps`` for ``keyframe``). A caller may pass one set for every mode: a mode takes
            the options it knows of that set.

    Raises:
        ConfigError: an unknown mode, or an option that no mode takes (a misspelt name).
    """
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"unknown smoothing option{plural} {', '.join(unknown)}; the modes "
                          f"take {', '.join(sorted(KNOWN_OPTIONS))}")
    mode = resolve_mode(mode, live=live, cpu=cpu)
    chosen = {k: v for k, v in options.items() if k in OPTIONS[mode]}
    if mode == "keyframe":
        return Keyframe(**chosen) if network is None else AsyncKeyframe(network=network, **chosen)
    return {"off": Identity, "ema": Ema, "flow": FlowSmoother}[mode](**chosen)
