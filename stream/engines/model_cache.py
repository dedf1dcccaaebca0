"""The cache of models built from a weights file: exported ONNX models, int8 forms, their checks.

Everything lives in ``$XDG_CACHE_HOME/slsnet`` (default ``~/.cache/slsnet``), under names that
hash whatever the file depends on (the weights' content, the library versions, the form), so
only the first start with given weights builds it. Files are written through a temporary file
and a rename (:func:`slsnet.onnx_export.write_atomically`): a reader, or a crash, never sees
half a file. A file that cannot be loaded is rebuilt; a folder that cannot be written only costs
the build at every start. Each folder keeps the :data:`KEEP` most recently used files of a kind.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from slsnet.onnx_export import write_atomically

log = logging.getLogger(__name__)

KEEP = 4  # cached models kept, the most recently used (~9 MB each): checkpoints come and go
T = TypeVar("T")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/slsnet``, or ``~/.cache/slsnet`` without that variable."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slsnet"


def prune(folder: Path, pattern: str = "slsnet-*.onnx", keep: int = KEEP) -> None:
    """Delete all but the ``keep`` most recently used ``pattern`` files in ``folder``."""
    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # deleted meanwhile by another process
            return 0.0

    for old in sorted(folder.glob(pattern), key=used, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_or_build(path: Path | None, build: Callable[[], bytes], load: Callable[[str | bytes], T],
                  *, what: str = "model") -> tuple[T, bool, Path | None]:
    """``load(path)`` if the cached file loads, else ``load(build())``, cached at ``path``.

    Args:
        path: the cache file (None: build, do not cache).
        build: makes the file's bytes.
        load: reads a path or the bytes themselves (a session, a record).
        what: names the file in warnings.

    Returns:
        (loaded, built, path): ``built`` is True when ``build`` ran; ``path`` is None when the
        file could not be written (the next start builds it again).
    """
    if path is not None and path.is_file():
        try:
            loaded = load(str(path))
            os.utime(path)  # most recently used: the last to be pruned
            return loaded, False, path
        except Exception as exc:  # onnxruntime raises its own types for a damaged file
            log.warning("cached %s %s cannot be loaded (%s); rebuilding it", what, path,
                        _first_line(exc))
    data = build()
    loaded = load(data)
    if path is not None:
        try:
            write_atomically(path, data)
            prune(path.parent, f"*{path.suffix}")
        except OSError as exc:
            log.warning("cannot cache the %s in %s (%s); it is built again at every start", what,
                        path.parent, exc)
            path = None
    return loaded, True, path


def read_record(source: str | bytes) -> dict:
    """A JSON record from a path or bytes (for :func:`load_or_build`).

    Raises:
        ValueError: not a JSON object (a damaged file is rebuilt).
    """
    data = Path(source).read_bytes() if isinstance(source, str) else source
    record = json.loads(data)
    if not isinstance(record, dict):
        raise ValueError("not a record")
    return record


def record_bytes(record: dict) -> bytes:
    """What :func:`read_record` reads back."""
    return json.dumps(record, indent=1, sort_keys=True).encode()


def update_record(path: Path | None, record: dict) -> None:
    """Rewrite a cached record whole (best effort: an unwritable cache is not an error)."""
    if path is None:
        return
    try:
        write_atomically(path, record_bytes(record))
    except OSError as exc:
        log.warning("cannot update %s (%s)", path, exc)
