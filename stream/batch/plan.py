"""What a batch run will do: the recordings, their keys, the options, and which are done.

A recording's key is its path relative to the folder it was found in (or its file name when
named directly), without the extension, with ``/`` as ``__`` and anything but letters, digits,
``.``, ``-`` and ``_`` as ``_``: ``visits/2026-01/a.mp4`` → ``visits__2026-01__a``. Its outputs
go to ``OUT/<key>/``. Two recordings with one key are an error before anything runs.

A recording is done when ``OUT/<key>/result.json`` says ``ok`` for the same input (size and
modification time) and the same options; anything else is (re)done. Work in progress lives in
``OUT/.staging/``, which every run empties first (only one run may hold ``OUT`` at a time).
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stream.errors import ConfigError

PATTERN = "*.mp4"
OUTPUTS = ("video", "masks", "csv", "mask-video")
RESULT = "result.json"
STAGING = ".staging"
LOCK = ".lock"
RESERVED = {"summary", "report", STAGING, LOCK}  # names of OUT's own files
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Recording:
    """One input file: the unit of work (its frames must go through the smoother in order)."""

    key: str
    path: str  # absolute
    size: int
    mtime_ns: int

    @property
    def identity(self) -> dict:
        """What a finished result must match to be skipped."""
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Options:
    """The per-recording options that decide the outputs (a rerun with others redoes all)."""

    outputs: tuple[str, ...] = ("video", "csv")
    weights: str = ""  # the weights file (absolute)
    weights_sha256: str = ""
    smooth: str = "auto"
    runtime: str = "auto"
    precision: str = "auto"
    device: str = "cpu"  # "cpu" or "cuda": every worker is told which
    batch: int = 1
    tta: bool = False  # the mean of the network over each frame and its mirror images
    hud: bool = False  # the HUD shows speeds, which differ run to run: off for archives
    threads: int = 1  # CPU intra-op threads per recording (its CPU share)
    max_frames: int | None = None
    extra: dict = field(default_factory=dict)  # test hooks; never part of the match

    def fingerprint(self) -> dict:
        """The options a finished result must have been made with.

        Threads are left out (a result made on a laptop stays done on a cluster, whose CPU
        share differs), and so are test hooks.
        """
        kept = asdict(self)
        kept.pop("extra")
        kept.pop("threads")
        kept["outputs"] = sorted(kept["outputs"])
        return kept


def key_for(relative: Path) -> str:
    """The key of a recording at ``relative`` (a path relative to its input folder)."""
    parts = list(relative.with_suffix("").parts)
    return "__".join(_UNSAFE.sub("_", p) for p in parts if p not in ("", "."))


def find_recordings(inputs: list[str], pattern: str = PATTERN) -> list[Recording]:
    """The recordings that ``inputs`` (folders, files, globs) name, sorted by key.

    Raises:
        ConfigError: an input that matches nothing, or two recordings with one key.
    """
    found: list[tuple[str, Path]] = []
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob(pattern) if p.is_file())
            found += [(key_for(p.relative_to(path)), p) for p in files]
        elif path.is_file():
            found.append((key_for(Path(path.name)), path))
        elif glob.has_magic(spec):
            base = _glob_base(spec)
            files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            found += [(key_for(p.relative_to(base)), p) for p in files]
            if not files:
                raise ConfigError(f"{spec}: matches no file")
        else:
            raise ConfigError(f"{spec}: no such file or folder")
    by_key: dict[str, Path] = {}
    for key, path in found:
        if not key or key in RESERVED:
            raise ConfigError(f"{path}: its key {key!r} is reserved; rename or move the file")
        if key in by_key:
            raise ConfigError(f"two recordings have the key {key!r}: {by_key[key]} and {path}; "
                              "give them different names or folders")
        by_key[key] = path
    recordings = []
    for key, path in sorted(by_key.items()):
        st = path.stat()
        recordings.append(Recording(key, str(path.resolve()), st.st_size, st.st_mtime_ns))
    return recordings


def _glob_base(spec: str) -> Path:
    parts = Path(spec).expanduser().parts
    plain = []
    for part in parts:
        if glob.has_magic(part):
            break
        plain.append(part)
    return Path(*plain) if plain else Path(".")


def weights_digest(path: str | Path) -> str:
    """The SHA-256 of a weights file, which every result records."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_result(out: Path, key: str) -> dict | None:
    """``OUT/<key>/result.json``, or None when missing or unreadable."""
    try:
        return json.loads((out / key / RESULT).read_text())
    except (OSError, ValueError):
        return None


def is_done(result: dict | None, recording: Recording, options: Options) -> bool:
    """Whether ``result`` is a finished run of this very input with these options."""
    return (result is not None and result.get("status") == "ok"
            and result.get("input") == recording.identity
            and result.get("options") == options.fingerprint())


class OutputFolder:
    """``OUT``, held by one run: a lock file, and a staging area emptied on entry.

    Raises:
        ConfigError: ``OUT`` cannot be created, or another run holds it.
    """

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out).expanduser().absolute()
        self._lock = None

    @property
    def staging(self) -> Path:
        """Where recordings are written before they are moved into place."""
        return self.path / STAGING

    def __enter__(self) -> OutputFolder:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / LOCK, "w")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise ConfigError(f"{self.path} is in use by another batch run") from None
        shutil.rmtree(self.staging, ignore_errors=True)  # what a crashed or cut run left
        self.staging.mkdir()
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()


def commit(staged: Path, final: Path) -> None:
    """Move a finished recording's folder into place (replacing an older one) by renames."""
    old = staged.with_name(staged.name + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(staged, final)
    shutil.rmtree(old, ignore_errors=True)
