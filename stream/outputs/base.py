"""What every sink shares: the open/write/close contract, output-path checks, timestamps.

Output paths are checked when a sink opens, before any frame flows, so a missing or read-only
directory, a directory given as a file, or an output that would overwrite the input is one
:class:`~stream.errors.SinkError` line at start-up, not a crash minutes later. Write failures
(disk full) become a ``SinkError`` naming the file and saying that it is incomplete.
"""

from __future__ import annotations

import errno
import os
from fractions import Fraction
from pathlib import Path

from stream.errors import SinkError, StreamError
from stream.frame import Frame, SourceInfo


class Sink:
    """Base of all sinks: ``open(info)``, ``write(frame)`` per frame, ``close()`` once or more.

    Attributes:
        name: short label for logs and stats ("video", "masks", ...).
        path: the file or directory written.
        written: frames written so far.
        warnings: one-line notes for the user (padding, retimed frames, dropped audio).
        input_complete: set by the pipeline before ``close()`` when the source gave its whole
            input (not stopped early), for outputs that copy more of it (the audio to its end).
    """

    name = "sink"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.written = 0
        self.warnings: list[str] = []
        self._info: SourceInfo | None = None
        self._closed = False
        self._created = False  # the output did not exist before open(): ours to remove
        self._failed: SinkError | None = None
        self.input_complete = False

    def open(self, info: SourceInfo) -> None:
        """Check the output and create it; raises :class:`SinkError` with one line."""
        if self._info is not None or self._closed:
            raise RuntimeError(f"{self.name} sink {self.path}: already opened or closed")
        self._created = not self.path.exists()
        try:
            self._open(info)
        except BaseException:
            self._remove_if_created()
            raise
        self._info = info

    def write(self, frame: Frame) -> None:
        """Write one frame; raises :class:`SinkError` when the output cannot take it."""
        if self._info is None or self._closed:
            raise RuntimeError(f"{self.name} sink {self.path}: write() outside open()/close()")
        if self._failed is not None:
            raise self._failed
        try:
            self._write(frame)
        except OSError as exc:
            raise self._fail(exc) from None
        self.written += 1

    def close(self) -> None:
        """Finalise the output; safe to call twice, or after a failed write or open."""
        if self._closed:
            return
        self._closed = True
        if self._info is None:
            return
        try:
            self._close()
        except OSError as exc:
            if self._failed is None:
                raise self._fail(exc) from None

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def discard(self) -> None:
        """Close, and remove the output if this sink created it and wrote no frame."""
        try:
            self.close()
        except StreamError:
            pass  # the error that made us discard is the one to report
        if self.written == 0:
            self._remove_if_created()

    def _remove_if_created(self) -> None:
        if not self._created:
            return
        try:
            if self.path.is_dir():
                self.path.rmdir()  # only if empty
            else:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass

    def _fail(self, exc: OSError) -> SinkError:
        """Turn an I/O error into the one-line SinkError this sink keeps raising."""
        self._failed = SinkError(
            f"cannot write {self.path}: {describe_os_error(exc)}; {self._incomplete_note()}"
        )
        return self._failed

    def _incomplete_note(self) -> str:
        return f"the output is incomplete ({self.written} frames written)"

    def _open(self, info: SourceInfo) -> None:
        raise NotImplementedError

    def _write(self, frame: Frame) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def describe_os_error(exc: BaseException) -> str:
    """'disk full (No space left on device)' and the like, without paths or tracebacks."""
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full ({reason})"
    if code == errno.EROFS:
        return "read-only file system"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return reason


def check_output_file(path: Path, info: SourceInfo | None, *, what: str) -> None:
    """Raise :class:`SinkError` unless ``path`` can be created as a new file for ``what``."""
    if path.is_dir():
        raise SinkError(f"{what} {path} is a directory; give a file name")
    _check_parent(path, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise SinkError(f"cannot write {what} {path}: the existing file is read-only")
    if info is not None and info.path and _same_file(path, Path(info.path)):
        raise SinkError(f"{what} {path} is the input file; choose another name")


def check_output_dir(path: Path, *, what: str) -> None:
    """Raise :class:`SinkError` unless ``path`` is, or can be made as, a writable directory."""
    if path.exists() and not path.is_dir():
        raise SinkError(f"{what} {path} exists and is not a directory")
    if not path.exists():
        _check_parent(path, what)
        return
    if not os.access(path, os.W_OK | os.X_OK):
        raise SinkError(f"cannot write {what} into {path}: the directory is read-only")


def _check_parent(path: Path, what: str) -> None:
    parent = path.absolute().parent
    if not parent.exists():
        raise SinkError(f"cannot write {what} {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise SinkError(f"cannot write {what} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SinkError(f"cannot write {what} {path}: directory {parent} is read-only")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


class PtsClock:
    """Strictly increasing PTS in one time base, for frames with or without their own PTS.

    File frames keep their PTS (rescaled only if ``time_base`` differs from the frame's);
    camera frames (``pts=None``) get ``capture_time`` since the first frame. A PTS that does not
    increase (broken files, rounding to a coarser time base) is moved one tick past the last,
    and counted in ``retimed`` (the largest move in ``moved_s``), because muxers reject it.
    """

    def __init__(self, time_base: Fraction) -> None:
        self.time_base = Fraction(time_base)
        self.retimed = 0
        self.moved_s = Fraction(0)  # the largest move of a retimed frame, in seconds
        self._t0: float | None = None
        self._last: int | None = None

    def seconds(self, frame: Frame) -> float:
        """Presentation time of ``frame`` in seconds (capture time since start for cameras)."""
        if self._t0 is None:
            self._t0 = frame.capture_time
        if frame.pts is None:
            return frame.capture_time - self._t0
        return float(frame.pts * frame.time_base)

    def __call__(self, frame: Frame) -> int:
        """The PTS to mux ``frame`` with, in ``time_base`` units."""
        if frame.pts is not None and Fraction(frame.time_base) == self.time_base:
            pts = frame.pts
        elif frame.pts is not None:
            pts = round(frame.pts * Fraction(frame.time_base) / self.time_base)
        else:
            pts = round(Fraction(self.seconds(frame)) / self.time_base)
        if self._last is not None and pts <= self._last:
            wanted = (Fraction(frame.pts) * Fraction(frame.time_base) if frame.pts is not None
                      else Fraction(self.seconds(frame)))
            pts = self._last + 1
            self.retimed += 1
            self.moved_s = max(self.moved_s, pts * self.time_base - wanted)
        self._last = pts
        return pts

    def retime_note(self, name: str) -> str | None:
        """The warning for frames moved later (how many, and how far), or None."""
        if not self.retimed:
            return None
        return (f"{name}: {self.retimed} frame(s) had non-increasing timestamps and were moved "
                f"later to keep them in order, by up to {float(self.moved_s) * 1000:.3g} ms")
