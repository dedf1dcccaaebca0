"""Helpers of the reliability tests: run the real CLI (in-process or as ``python demo.py``),
read what it printed, and make small file systems that are full or read-only.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo.py"


@dataclass(frozen=True)
class CliRun:
    """What one run of the CLI returned and printed on stderr."""

    rc: int
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        """Lines that report an error (``error: ...``, or argparse's ``prog: error: ...``)."""
        return [line for line in self.stderr.splitlines() if re.match(r"^(\S+: )?error: ", line)]

    @property
    def warnings(self) -> list[str]:
        """``warning: ...`` lines."""
        return [line for line in self.stderr.splitlines() if line.startswith("warning: ")]

    @property
    def has_traceback(self) -> bool:
        """Whether a Python traceback was printed."""
        return "Traceback (most recent call last)" in self.stderr

    def counts(self) -> tuple[int, int]:
        """(frames in, frames out) from the summary table's caption."""
        found = re.findall(r"frames in\s+(\d+),\s+out\s+(\d+)", self.stderr)
        assert found, f"no summary in:\n{self.stderr}"
        return int(found[-1][0]), int(found[-1][1])


def run_cli(*argv: str | Path) -> CliRun:
    """``stream.cli.main(argv)`` in this process (headless), capturing stderr."""
    from stream.cli import main

    err = io.StringIO()
    start = time.perf_counter()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "400"  # rich wraps long lines (paths) at 80 columns otherwise
    try:
        with contextlib.redirect_stderr(err):
            rc = main([str(a) for a in argv] + ["--no-display"])
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return CliRun(rc, err.getvalue(), time.perf_counter() - start)


def demo_env(**extra: str) -> dict[str, str]:
    """Environment for a ``python demo.py`` child: one thread, a wide console, our imports."""
    env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    return env


def start_demo(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python demo.py ARGV --no-display`` with stdout and stderr piped."""
    command = [sys.executable, str(DEMO), *map(str, argv), "--no-display"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or demo_env(), cwd=REPO)


def finish(proc: subprocess.Popen, timeout: float) -> CliRun:
    """Wait for a child started by :func:`start_demo`; kill it and fail if it hangs."""
    start = time.perf_counter()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the process did not end within {timeout} s:\n{err[-3000:]}")
    return CliRun(proc.returncode, err, time.perf_counter() - start)


def wait_for(condition: Callable[[], bool], *, timeout: float, proc=None, what: str = "") -> None:
    """Poll ``condition`` every 20 ms; fail on timeout or when ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before {what}:\n"
                        f"{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def csv_rows(path: Path) -> int:
    """Data rows of a CSV written by the CSV sink (0 while it does not exist)."""
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return max(0, len(lines) - 1)


@contextlib.contextmanager
def small_fs(path: Path, *, size_kb: int = 64, read_only: bool = False) -> Iterator[Path]:
    """A private tmpfs of ``size_kb`` at ``path`` (``read_only``: mounted ro); skips without root.

    ENOSPC and EROFS from it are real kernel errors, which hold for root too (unlike file modes).
    """
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    tag = f"slsnet-test-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, tag, str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN)."""
    probe = Path(f"/tmp/slsnet-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "probe", str(probe)],
                          capture_output=True)
    if done.returncode == 0:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return done.returncode == 0


class ErrorWatch:
    """Notes (``perf_counter``) when ``pipeline.error`` is first set, from a thread of its own."""

    def __init__(self, pipeline, *, limit_s: float = 600) -> None:
        self._pipeline, self._limit_s = pipeline, limit_s
        self._at: float | None = None
        self._thread = threading.Thread(target=self._watch, name="error watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        deadline = time.perf_counter() + self._limit_s
        while self._pipeline.error is None and time.perf_counter() < deadline:
            time.sleep(0.005)
        self._at = time.perf_counter()

    def seconds_until(self, moment: float) -> float:
        """Seconds from the failure to ``moment`` (e.g. when ``run`` returned)."""
        self._thread.join(5)
        assert self._at is not None, "the pipeline reported no error"
        return moment - self._at


def playable_pts(path: Path) -> list[int]:
    """PTS of the frames a player gets from ``path``, skipping packets that fail to decode.

    A file cut short (killed process, full disk) may end in a partial packet; a player shows
    everything before it, and so does this.
    """
    pts: list[int] = []
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            try:
                pts.extend(frame.pts for frame in packet.decode())
            except av.FFmpegError:
                continue
    return sorted(pts)
