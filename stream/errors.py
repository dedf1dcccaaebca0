"""The project's one error tree: problems a user can fix, each reported as one line.

Every message names the file, device or setting concerned, so the CLI can catch
:class:`StreamError` alone, print ``error: {exc}`` and exit 1 without a traceback. Anything else
(``TypeError``, ``KeyError``, a bug) is a programming error and keeps its traceback. Library
code raises these; it never calls ``sys.exit``.

::

    StreamError
    ├── ConfigError      a flag, option or combination that cannot be used (also a ValueError)
    ├── SourceError      a video file or camera that cannot be opened or stopped delivering
    ├── SinkError        an output that cannot be opened or written
    ├── EngineError      a device, precision or runtime this machine cannot run (a ValueError)
    │   └── WeightsError a weights file that is missing or not SLSNet weights
    ├── StageError       a stage failed while frames were flowing (names the stage)
    ├── UploadError      an upload the web demo cannot use (also a ValueError)
    └── ServeError       the web demo cannot serve (port taken, address not local)
"""

from __future__ import annotations

from slsnet.checkpoint import WeightsError as CheckpointError


class StreamError(Exception):
    """A problem the user can fix (bad input, unwritable output, missing device)."""

    def __init__(self, message: str) -> None:
        # one line, whatever FFmpeg or OpenCV put in the text we wrap
        super().__init__(" ".join(str(message).split()))


class ConfigError(StreamError, ValueError):
    """A flag, option or combination of them that cannot be used."""


class SourceError(StreamError):
    """A video file or camera that cannot be opened, or stopped delivering frames."""


class SinkError(StreamError):
    """An output that cannot be opened or written (missing directory, read-only, disk full)."""


class EngineError(StreamError, ValueError):
    """A device, precision or runtime that this machine cannot run."""


class WeightsError(EngineError, CheckpointError):
    """A weights file that is missing, corrupt, or not an SLSNet generator of this shape.

    Also a :class:`slsnet.checkpoint.WeightsError`, which the checkpoint reader raises.
    """


class StageError(StreamError):
    """A stage failed while frames were flowing; the message starts with the stage's name."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        super().__init__(f"{stage} failed: {reason}")
        self.stage = stage
        self.summary = None  # a stream.stats.Summary, filled by Pipeline.run before it raises


class UploadError(StreamError, ValueError):
    """An upload the web demo cannot use; ``str(exc)`` is the one line shown in the page."""


class ServeError(StreamError):
    """The web demo cannot serve (the port is taken, the address is not this machine's)."""
