"""How every command ends: a user's mistake is one line, Ctrl-C is "interrupted", never a traceback.

``python -m stream`` (and ``demo.py``) and ``python -m stream.batch`` run their body through
:func:`run_command`: a :class:`~stream.errors.StreamError` (a file that cannot be read, a device
that is not there, a bad flag value) prints ``error: <one line>`` and returns
:data:`EXIT_ERROR`; a Ctrl-C that reaches it (before the pipeline took the signal over) prints
``interrupted`` and returns :data:`EXIT_INTERRUPTED`. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from stream import interrupts
from stream.errors import StreamError

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def run_command(body: Callable[[], int], *, debug: bool = False) -> int:
    """``body()``'s exit status, or the status and one line for a user error or a Ctrl-C."""
    try:
        return body()
    except StreamError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # before the pipeline took over the signal
        interrupts.ignore()  # a second press while this is printed changes nothing
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
