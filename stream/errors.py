"""Errors the streaming pipeline reports to a user as one line.

Every message is a complete sentence fragment that names the file or device concerned, so the
CLI can print ``error: {exc}`` and exit non-zero without a traceback. Programming errors stay
ordinary exceptions (``ValueError``, ``TypeError``) and keep their tracebacks.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A problem the user can fix (bad input, unwritable output, missing device)."""

    def __init__(self, message: str) -> None:
        # one line, whatever FFmpeg or OpenCV put in the text we wrap
        super().__init__(" ".join(str(message).split()))


class SourceError(PipelineError):
    """A video file or camera that cannot be opened, or stopped delivering frames."""


class SinkError(PipelineError):
    """An output that cannot be opened or written (missing directory, read-only, disk full)."""
