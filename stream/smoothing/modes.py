"""The ``--smooth`` modes: which one ``auto`` stands for, and building a smoother by name."""

from __future__ import annotations

from stream.engines.thread import EngineThread
from stream.errors import ConfigError
from stream.smoothing.blend import Ema, FlowSmoother, Identity
from stream.smoothing.keyframe import (
    HEADROOM,
    PROP_MS,
    AsyncKeyframe,
    Keyframe,
    keyframe_interval,
)

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


def resolve_mode(mode: str, *, live: bool, cpu: bool, net_ms: float | None = None,
                 fps: float | None = None) -> str:
    """The mode ``auto`` stands for; any other mode as it is.

    On the temporal benchmark (docs/benchmarks.md) ``flow`` removes most of the excess flicker
    at no cost in accuracy, so it is the default wherever every frame can go through the
    network: files (they wait for it), live sources on a GPU, and live sources on a CPU whose
    measured network time fits the source's frame interval (:func:`every_frame_fits`). Where it
    does not, ``keyframe`` (network on keyframes, flow in between, the interval following the
    measured network time) shows every frame at a small cost in accuracy.

    Args:
        mode: one of ``CHOICES``.
        live: the source is a camera (or a file played in real time): frames may not wait.
        cpu: the network runs on the CPU.
        net_ms: the network's measured time per frame (None: not measured; a live source on
            the CPU then gets ``keyframe``).
        fps: the source's frame rate (None: 30).
    """
    if mode not in CHOICES:
        raise ConfigError(f"unknown smoothing mode {mode!r}; choose from {', '.join(CHOICES)}")
    if mode != "auto":
        return mode
    if not (live and cpu):
        return "flow"
    return "flow" if net_ms is not None and every_frame_fits(net_ms, fps) else "keyframe"


def frame_budget_ms(fps: float | None) -> float:
    """The network's share of a frame interval at ``fps`` (None: 30) when every frame runs it."""
    return HEADROOM * 1000.0 / (fps or 30.0) - PROP_MS


def every_frame_fits(net_ms: float, fps: float | None) -> bool:
    """Whether the network can run on every frame at ``fps``: a keyframe interval of 1."""
    return keyframe_interval(net_ms, 1000.0 / (fps or 30.0)) == 1


def auto_reason(net_ms: float, fps: float | None) -> str:
    """Why ``auto`` chose as it did for a live source on the CPU, in a few words."""
    sign = "≤" if every_frame_fits(net_ms, fps) else ">"
    return (f"network {net_ms:.0f} ms a frame {sign} {frame_budget_ms(fps):.0f} ms that "
            f"{fps or 30.0:g} fps allows")


def build_smoother(mode: str = "off", *, live: bool = False, cpu: bool = True,
                   net_ms: float | None = None, network: EngineThread | None = None,
                   **options) -> Identity:
    """The smoother for ``--smooth MODE``.

    Args:
        mode: one of ``CHOICES`` (``auto`` is resolved by :func:`resolve_mode`).
        live: the source is live (for ``auto``).
        cpu: the network runs on the CPU (for ``auto``).
        net_ms: the network's measured time per frame (for ``auto``).
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
    mode = resolve_mode(mode, live=live, cpu=cpu, net_ms=net_ms, fps=options.get("fps"))
    chosen = {k: v for k, v in options.items() if k in OPTIONS[mode]}
    if mode == "keyframe":
        return Keyframe(**chosen) if network is None else AsyncKeyframe(network=network, **chosen)
    return {"off": Identity, "ema": Ema, "flow": FlowSmoother}[mode](**chosen)
