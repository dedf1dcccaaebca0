"""Ctrl-C during start-up, remembered even where a library swallows it.

Importing torch, OpenCV and PyAV takes seconds. A Ctrl-C in that time raises KeyboardInterrupt
in whatever Python code runs; C code that clears Python errors (import fallbacks, attribute
probes) can swallow it, and the run then carries on as if nothing had been pressed. The entry
points call :func:`watch` first, with nothing heavy imported yet; :func:`check` at the start-up
milestones turns a remembered press into KeyboardInterrupt, which ``stream.cli.main`` reports as
"interrupted" with exit status 130. The pipeline then installs its own handler (soft stop).
Once the outcome is decided, :func:`ignore` makes later presses (an impatient second Ctrl-C)
harmless, and :func:`leave` exits with it.
"""

from __future__ import annotations

import gc
import signal
import sys
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


def ignore() -> None:
    """Ignore Ctrl-C from now on (main thread only): the run's outcome is already decided."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def leave(status: int, message: str | None = None) -> None:
    """Exit with ``status`` (after printing ``message`` to stderr), immune to further Ctrl-C.

    Everything is closed by now. The interpreter's last garbage collection over torch's and
    Gradio's object graphs is skipped: it took seconds (12 s under load) after a web server's
    Ctrl-C.
    """
    ignore()
    if message:
        print(message, file=sys.stderr)
    gc.freeze()
    sys.exit(status)
