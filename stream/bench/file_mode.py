"""File mode for ``python -m stream.bench``: the app's ``--output`` run vs plain PyAV I/O.

A clip of the bundled sample sweep is stretched to the asked size and encoded once; then the
same clip goes (a) through a plain loop of PyAV decode → BGR array → PyAV encode with the app's
x264 settings, the floor any pipeline has to pay, and (b) through the app's own pipeline (file
source, engine, render, video sink) exactly as ``--video CLIP --output OUT --no-display`` runs
it. Engine start-up (weights, CUDA graph capture) and one warm run stay out of the timing.
PyAV is imported only here, so the benchmark runs without it (the GPU image lacks it).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from stream.assembly import Outputs, RunConfig, build_pipeline, open_input, open_outputs
from stream.bench.measure import Row
from stream.engines import CpuEngine
from stream.engines.cuda import CudaEngine
from stream.outputs import VideoSink
from stream.sources import SAMPLE


def _sample_frames(size_wh: tuple[int, int]):
    """The sample sweep's frames stretched to ``size_wh``, looped forever."""
    import av
    import cv2

    while True:
        with av.open(str(SAMPLE)) as inp:
            for vf in inp.decode(video=0):
                yield cv2.resize(vf.to_ndarray(format="bgr24"), size_wh)


def make_clip(path: Path, size_wh: tuple[int, int], frames: int) -> Path:
    """An H.264 clip of the bundled sample sweep, stretched to ``size_wh`` (looped as needed)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height = size_wh
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for _, image in zip(range(frames), _sample_frames(size_wh), strict=False):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode(None))
    return path


def plain_decode_encode(src: Path, dst: Path) -> int:
    """The floor: PyAV decode → BGR array → PyAV encode with the app's x264 settings."""
    import av

    ref = VideoSink(dst)  # only for its encoder settings
    count = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        vout = out.add_stream(ref.codec, rate=vin.average_rate, options={
            "preset": ref.preset, "tune": "zerolatency", "crf": str(ref.crf),
            "x264-params": "bframes=0"})
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        for vf in inp.decode(vin):
            image = vf.to_ndarray(format="bgr24")
            out.mux(vout.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
            count += 1
        out.mux(vout.encode(None))
    return count


def app_file_mode(engine, src: Path, dst: Path, batch: int) -> tuple[int, float]:
    """The app's ``--video SRC --output DST --no-display``: (frames written, wall seconds).

    Smoothing is off: the row measures decoding, the network, render and encoding.
    """
    t0 = time.perf_counter()
    config = RunConfig(device=engine.device, source=str(src), outputs=Outputs(video=dst),
                       batch=batch, smooth="off")
    source = open_input(config)
    sinks = open_outputs(config, source.info)
    summary = build_pipeline(config, source, engine, sinks=sinks).run(handle_sigint=False)
    return summary.frames_out, time.perf_counter() - t0


def file_rows(build: Callable[[int], object], *, size_wh: tuple[int, int], frames: int,
              batches: tuple[int, ...], repeats: int, workdir: Path) -> list[Row]:
    """Plain decode + encode vs the app's file mode on the same generated clip (median walls)."""
    w, h = size_wh
    clip = make_clip(workdir / "clip.mp4", size_wh, frames)
    what = f"{w}×{h}, {frames} frames"
    walls = [_timed(plain_decode_encode, clip, workdir / "plain.mp4") for _ in range(repeats)]
    plain = float(np.median([t for _, t in walls]))
    rows = [Row("file", f"plain PyAV decode + encode ({what})", "libx264", None,
                images_per_s=walls[0][0] / plain, wall_s=plain)]
    for batch in batches:
        engine = build(batch)
        if hasattr(engine, "prepare"):
            engine.prepare(size_wh)  # start-up (graph capture), not file processing
        app_file_mode(engine, clip, workdir / "warm.mp4", batch)  # first-run costs stay out
        runs = [app_file_mode(engine, clip, workdir / "app.mp4", batch) for _ in range(repeats)]
        wall = float(np.median([t for _, t in runs]))
        note = f"{wall / plain:.2f}× plain" + ("" if runs[0][0] == frames else
                                               f"; wrote {runs[0][0]} of {frames} frames")
        rows.append(Row("file", f"app --output ({what})", engine.name, batch,
                        images_per_s=runs[0][0] / wall, wall_s=wall, note=note))
    return rows


def _timed(fn, *args) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn(*args)
    return n, time.perf_counter() - t0


def file_section(generator, *, device: torch.device, untrained: bool, size_wh: tuple[int, int],
                 frames: int, quick: bool, notes: list[str]) -> list[Row]:
    """The file-mode rows for ``device`` (CUDA: batch 1 and 8), or a note when PyAV is missing."""
    try:
        import av  # noqa: F401
    except ImportError as exc:
        notes.append(f"PyAV not importable ({exc}): file-mode comparison skipped")
        return []
    if device.type == "cuda":
        def build(batch):
            return CudaEngine(generator, device=device, batch=batch, untrained=untrained)

        batches, repeats = (1, 8), (1 if quick else 3)
    else:
        def build(batch):
            return CpuEngine(copy.deepcopy(generator), untrained=untrained)

        batches, repeats = (1,), 1
    with tempfile.TemporaryDirectory(prefix="slsnet-bench-") as tmp:
        return file_rows(build, size_wh=size_wh, frames=frames, batches=batches,
                         repeats=repeats, workdir=Path(tmp))
