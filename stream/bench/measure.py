"""Timing tools of the benchmarks: a result row, repeat counts, latency and throughput loops."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Row:
    """One measurement; None where it does not apply."""

    section: str  # "model", "frame path", "preprocess", "file"
    name: str  # what ran
    mode: str  # precision / graph / device
    batch: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    images_per_s: float | None = None
    wall_s: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        for f in ("p50_ms", "p99_ms", "images_per_s", "wall_s"):
            value = getattr(self, f)
            setattr(self, f, None if value is None else float(value))


@dataclass(frozen=True)
class Timing:
    """Repeat counts: warm-up calls, timed latency calls, throughput repeats of a few batches."""

    warmup: int  # untimed calls before latency timing
    iters: int  # timed latency calls
    repeats: int  # throughput: timed repeats (the median counts)
    per_repeat: int  # throughput: back-to-back batches per repeat
    batch_warmup: int  # throughput: untimed batches first (cuDNN tunes each new shape)


def latencies(run: Callable[[], object], sync: Callable[[], None], warmup: int,
              iters: int) -> list[float]:
    """Wall-clock ms of ``run(); sync()``, ``iters`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
        sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        run()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def throughput(run: Callable[[], object], batch: int, sync: Callable[[], None],
               timing: Timing) -> float:
    """Images per second: median over repeats of ``per_repeat`` back-to-back batches."""
    for _ in range(timing.batch_warmup):
        run()
    sync()
    seconds = []
    for _ in range(timing.repeats):
        t0 = time.perf_counter()
        for _ in range(timing.per_repeat):
            run()
        sync()
        seconds.append((time.perf_counter() - t0) / timing.per_repeat)
    return batch / float(np.median(seconds))


# ---------------------------------------------------------------------------------------- CPU
