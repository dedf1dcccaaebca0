"""Ctrl-C during start-up, remembered even where a library swallows it.

Importing torch, OpenCV and PyAV takes seconds. A Ctrl-C in that time raises KeyboardInterrupt
in whatever Python code runs; C code that clears Python errors (import fallbacks, attribute
probes) can swallow it, and the run then carries on as if nothing had been pressed. The entry
points call :func:`watch` first, with nothing heavy imported yet; :func:`check` at the start-up
milestones turns a remembered press into KeyboardInterrupt, which ``stream.cli.main`` reports as
"interrupted" with exit status 130. The pipeline then installs its own handler (soft stop).
"""

from __future__ import annotations

import signal
import threading

_pressed = threading.Event()


def _on_sigint(signum, frame) -> None:
    _pressed.set()
    raise KeyboardInterrupt


def watch() -> None:
    """Remember every Ctrl-C from now on (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def pressed() -> bool:
    """Whether Ctrl-C was pressed since :func:`watch`."""
    return _pressed.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed since :func:`watch`, swallowed or not."""
    if _pressed.is_set():
        raise KeyboardInterrupt
