"""Fault injection for the reliability tests: ``SLSNET_FAIL_STAGE=<stage>[@<frame index>]``.

The CLI reads the variable once (:func:`fault_from_env`) and passes the :class:`Fault` to the
pipeline, which makes the named stage raise
:class:`InjectedFailure` from the given frame on (frame 0 when no index is given), so a test can
run the real CLI and prove that a failure anywhere stops everything promptly, names the stage,
and leaves closed outputs. Stages: ``source`` (its capture thread fails), ``engine``,
``smoothing``, ``render``, and each sink as ``sink <name>``: ``sink video``, ``sink mask dir``,
``sink mask video``, ``sink csv``. Unset, nothing changes and nothing is checked.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from stream.errors import ConfigError
from stream.frame import Frame
from stream.queues import EOS, FrameQueue

FAIL_ENV = "SLSNET_FAIL_STAGE"


class InjectedFailure(RuntimeError):
    """The failure that :data:`FAIL_ENV` asked for."""


@dataclass(frozen=True)
class Fault:
    """Fail ``stage`` on every frame whose index is ``at`` or more."""

    stage: str
    at: int = 0

    def check(self, stage: str, item: object) -> None:
        """Raise :class:`InjectedFailure` if ``item`` (a Frame or a list of them) is due."""
        frames = item if isinstance(item, list) else [item]
        if stage == self.stage and any(isinstance(f, Frame) and f.index >= self.at for f in frames):
            raise InjectedFailure(f"injected failure ({FAIL_ENV}={self.stage}@{self.at})")


def fault_from_env() -> Fault | None:
    """The :class:`Fault` that :data:`FAIL_ENV` names, or None when it is unset or empty."""
    spec = os.environ.get(FAIL_ENV, "").strip()
    if not spec:
        return None
    stage, _, at = spec.partition("@")
    if at and not at.strip().isdigit():
        raise ConfigError(f"{FAIL_ENV}={spec!r}: expected <stage>[@<frame index>]")
    return Fault(stage.strip(), int(at) if at else 0)


class FaultyQueue:
    """A source's queue that fails the capture thread when a due frame is put (stage source)."""

    def __init__(self, queue: FrameQueue, fault: Fault) -> None:
        self._queue, self._fault = queue, fault

    def put(self, item, stop: threading.Event, **kwargs) -> None:
        """Put ``item``, or raise :class:`InjectedFailure` in the putting (capture) thread."""
        if item is not EOS:
            self._fault.check("source", item)
        self._queue.put(item, stop, **kwargs)

    def __len__(self) -> int:
        return len(self._queue)

    def __getattr__(self, name: str):
        return getattr(self._queue, name)
