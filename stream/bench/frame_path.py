"""The frame path as the application runs it: capture thread → pool → pipeline → mask.

Frames come from memory (:class:`stream.sources.MemorySource`, so decoding is not measured and
no PyAV is needed) through the same :class:`stream.pipeline.Pipeline` that ``--video`` and
``--camera`` use: landed in the engine's pinned memory on the capture thread (GPU), started
and finished in two halves so that the network of frame n+1 overlaps the host work of frame
n, thresholded into a full-size mask. Nothing is drawn or written (no renderer, no sink): the
rows measure frame → mask.

Two rows per frame size:

- paced: a camera-like source at ``fps`` (``latest`` queue); latency is each frame's end to
  end time, from its capture (before the copy into the pool) to its mask, p50 and p99;
- flat out: a file-like source (``lossless``) as fast as the pipeline takes frames;
  frames per second over the run.
"""

from __future__ import annotations

import time

import numpy as np

from stream.bench.measure import Row
from stream.pipeline import Pipeline
from stream.segmenter import Segmenter
from stream.smoothing import build_smoother
from stream.sources import MemorySource
from stream.stats import E2E


def _pictures(size_wh: tuple[int, int], n: int = 4) -> list[np.ndarray]:
    w, h = size_wh
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def run_frames(engine, source: MemorySource):
    """One pipeline run over ``source`` with smoothing off and no renderer: (summary, source)."""
    smoother = build_smoother("off", size=engine.size, fps=source.info.fps,
                              threshold=engine.threshold)
    segmenter = Segmenter(engine, smoother, renderer=None)
    return Pipeline(source, engine, segmenter=segmenter).run(handle_sigint=False)


def pipeline_rows(engine, *, size_wh: tuple[int, int], frames: int = 300,
                  fps: float = 60.0) -> list[Row]:
    """The paced and the flat-out row for ``engine`` on W×H frames."""
    w, h = size_wh
    pictures = _pictures(size_wh)
    prepare = getattr(engine, "prepare", None)
    if prepare is not None:
        prepare(size_wh)
    run_frames(engine, MemorySource(pictures, count=20))  # warm-up: first-run costs stay out
    rows = []
    paced = MemorySource(pictures, count=frames, fps=fps, live=True, queue_size=2)
    summary = run_frames(engine, paced)
    p50, _, p99 = summary.latency.get(E2E, (None, None, None))
    pool = paced.pool
    note = f"{summary.dropped} dropped" + (f"; pool {pool.allocated} buffers, {pool.missed} "
                                           "frames not landed" if pool is not None else "")
    rows.append(Row("frame path", f"{w}×{h} frame → mask (pipeline, paced {fps:g} fps)",
                    engine.name, 1, p50, p99, note=note))
    flat = MemorySource(pictures, count=frames)
    t0 = time.perf_counter()
    summary = run_frames(engine, flat)
    wall = time.perf_counter() - t0
    rows.append(Row("frame path", f"{w}×{h} frame → mask (pipeline, flat out)", engine.name, 1,
                    images_per_s=summary.frames_out / wall, wall_s=wall,
                    note=f"{summary.frames_out} frames"))
    return rows
