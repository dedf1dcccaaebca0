"""The files of a training run that ``--resume`` relies on, and how they stay consistent.

A run folder holds ``last.pt`` (the commit point: everything needed to continue exactly),
``log.jsonl`` (a line per finished epoch) and the generators. Each epoch is written with SIGINT
and SIGTERM held, the log line before ``last.pt``; a resume drops any log line that ``last.pt``
does not hold, so even a SIGKILL between the two leaves a run that continues cleanly.
"""

from __future__ import annotations

import json
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def rng_state(rng: np.random.Generator) -> dict:
    """Torch (CPU and CUDA) and numpy RNG states, for an exact resume."""
    state = {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    rng.bit_generator.state = state["numpy"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def append_log(path: Path, record: dict) -> None:
    """Add one epoch's record to ``log.jsonl``."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict]:
    """The records of ``log.jsonl`` (none when it does not exist yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def commit_checkpoint(path: Path, state: dict) -> None:
    """Write ``last.pt`` atomically: a crash leaves the previous one whole."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@contextmanager
def signals_held():
    """Defer SIGINT and SIGTERM until the block ends, then let them act as they would have."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in caught[:1]:
            signal.raise_signal(sig)


def trim_log(path: Path, last_epoch: int) -> None:
    """Drop the lines of ``path`` that the checkpoint does not hold.

    Those are the epochs after ``last_epoch``, and a line cut short by a crash as it was written.
    """
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)

    def held(line: str) -> bool:
        try:
            return json.loads(line)["epoch"] <= last_epoch
        except (ValueError, KeyError, TypeError):
            return False

    kept = [line for line in lines if held(line)]
    if len(kept) != len(lines):
        path.write_text("".join(kept))
