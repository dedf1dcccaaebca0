"""Timing CPU callables in turn, so that each is measured under the same load.

Shared by the benchmarks (:mod:`stream.bench`) and by ``--runtime auto``'s choice of CPU form
(:mod:`stream.engines.cpu_choice`), which times candidates on the user's machine at first start.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def alternating(runs: list[Callable[[], object]], warmup: int, iters: int, *,
                block: int = 5) -> list[list[float]]:
    """Wall-clock ms per call of each callable, taken in turn so that each sees the same load.

    Each turn times ``block`` calls of one callable after one untimed call: a runtime's worker
    threads spin on for a while after a call (ONNX Runtime's and OpenMP's do), which would slow
    the next callable's first call, and would make a per-call alternation measure each
    callable beside the previous one's spinning threads rather than as an application runs it.

    Args:
        runs: the callables.
        warmup: untimed calls of each before timing.
        iters: timed calls of each (rounded up to whole blocks).
        block: calls per turn.
    """
    for run in runs:
        for _ in range(warmup):
            run()
    out: list[list[float]] = [[] for _ in runs]
    for _ in range(-(-iters // block)):
        for run, ms in zip(runs, out, strict=True):
            run()  # settles: the previous callable's threads stop spinning
            for _ in range(block):
                t0 = time.perf_counter()
                run()
                ms.append((time.perf_counter() - t0) * 1e3)
    return out
