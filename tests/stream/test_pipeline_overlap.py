"""The pipeline's two-halves step and the frame pool, with an engine that works beside the host.

On the CPU the engine is the real CPU engine run on a worker thread (``predict_async``) and its
"pinned" memory is ordinary memory; the CUDA test at the end runs the same path on a GPU with
real pinned memory and the CUDA engine's own ``predict_async``.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from stream.engines import build_engine
from stream.frame import Frame
from stream.pipeline import Pipeline
from stream.segmenter import Segmenter
from stream.smoothing import build_smoother
from stream.sources import MemorySource

SIZE_WH = (96, 72)


def pictures(n=5, size_wh=SIZE_WH):
    w, h = size_wh
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        image = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
        image[h // 4: h // 4 + h // 3 + 4 * i, w // 4: w // 2 + 5 * i] //= 3  # a dark lesion
        out.append(image)
    return out


class BesideTheHost:
    """The CPU engine on a worker thread, with ``predict_async`` and ``pinned_array``."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.device, self.size, self.name = engine.device, engine.size, engine.name + " async"
        self.threshold, self.untrained = engine.threshold, engine.untrained
        self.pool = ThreadPoolExecutor(1)
        self.log: list[tuple[str, int]] = []
        self.arrays = 0
        self._lock = threading.Lock()

    def pinned_array(self, shape):
        self.arrays += 1
        return np.empty(shape, np.uint8)

    def predict(self, frames: list[Frame]) -> None:
        self.engine.predict(frames)

    def infer(self, frames: list[Frame]) -> None:
        self.engine.infer(frames)

    def predict_async(self, frames: list[Frame]):
        with self._lock:
            self.log.append(("start", frames[0].index))
        return Handle(self, frames[0].index, self.pool.submit(self.engine.predict, frames))


class Handle:
    """What ``predict_async`` returns: ``collect()`` waits for the worker's result."""

    def __init__(self, engine: BesideTheHost, index: int, future) -> None:
        self.engine, self.index, self.future = engine, index, future

    def collect(self) -> None:
        self.future.result()
        with self.engine._lock:
            self.engine.log.append(("wait", self.index))


class Keeper:
    """A sink that keeps every frame it is given, with a copy of its picture at write time."""

    name = "keeper"

    def __init__(self) -> None:
        self.frames, self.seen = [], []

    def open(self, info) -> None:
        pass

    def write(self, frame) -> None:
        self.frames.append(frame)
        self.seen.append(frame.image.copy())

    def close(self) -> None:
        pass


class Checker(Keeper):
    """Keeps only the copies: frames themselves are let go, so the pool can reuse buffers."""

    def write(self, frame) -> None:
        self.seen.append((frame.index, frame.image.copy(), frame.mask.copy()))


@pytest.fixture(scope="module")
def cpu_engine():
    return build_engine(device=torch.device("cpu"), weights=None, threads=1)


def run(engine, source, sinks):
    smoother = build_smoother("off", size=engine.size, fps=30.0, threshold=engine.threshold)
    segmenter = Segmenter(engine, smoother, renderer=None)
    return Pipeline(source, engine, sinks=sinks, segmenter=segmenter).run(handle_sigint=False)


def test_frame_n_plus_one_starts_before_frame_n_finishes_and_results_are_unchanged(cpu_engine):
    images = pictures()
    reference = Checker()
    run(cpu_engine, MemorySource(images, count=30), [reference])

    engine = BesideTheHost(cpu_engine)
    checker = Checker()
    source = MemorySource(images, count=30, queue_size=4)
    summary = run(engine, source, [checker])

    assert summary.frames_out == 30 and [i for i, *_ in checker.seen] == list(range(30))
    for (i, image, mask), (_, _, ref_mask) in zip(checker.seen, reference.seen, strict=True):
        assert np.array_equal(image, images[i % len(images)]), f"frame {i}'s picture changed"
        assert np.array_equal(mask, ref_mask), f"frame {i}'s mask differs from one step at a time"
    starts = [i for what, i in engine.log if what == "start"]
    waits = [i for what, i in engine.log if what == "wait"]
    assert starts == waits == list(range(30))  # every frame once, finished in order
    position = {event: k for k, event in enumerate(engine.log)}
    overlapped = [i for i in range(29) if position[("start", i + 1)] < position[("wait", i)]]
    assert overlapped, "no frame was started before the one before it was finished"
    # pictures landed in the engine's memory, and its buffers were reused
    assert source.pool is not None and source.pool.allocated == engine.arrays
    assert 0 < engine.arrays < 30 and source.pool.reused > 0


def test_a_sink_that_keeps_every_frame_keeps_its_pixels(cpu_engine):
    images = pictures()
    engine = BesideTheHost(cpu_engine)
    keeper = Keeper()
    source = MemorySource(images, count=60, queue_size=2)
    run(engine, source, [keeper])
    assert len(keeper.frames) == 60
    for frame, seen in zip(keeper.frames, keeper.seen, strict=True):
        assert np.array_equal(frame.image, seen), f"frame {frame.index} was overwritten"
        assert np.array_equal(seen, images[frame.index % len(images)])
    pool = source.pool
    assert pool.missed > 0 and len(pool) == pool.limit  # held buffers are never taken back


def test_without_an_asynchronous_engine_nothing_changes(cpu_engine):
    source = MemorySource(pictures(), count=5)
    checker = Checker()
    run(cpu_engine, source, [checker])
    assert source.pool is None and len(checker.seen) == 5


@pytest.mark.cuda
def test_cuda_pipeline_lands_in_pinned_memory_and_matches_one_frame_at_a_time():
    from slsnet import build_generator
    from stream.engines.cuda import CudaEngine
    from stream.engines.cuda_ring import pinned_tensor

    torch.manual_seed(0)
    engine = CudaEngine(build_generator().eval(), device=torch.device("cuda"), precision="fp32")
    images = pictures(size_wh=(1920, 1080))
    keeper = Keeper()
    source = MemorySource(images, count=40, queue_size=4)
    run(engine, source, [keeper])
    assert len(keeper.frames) == 40
    assert all(pinned_tensor(f.image) is not None for f in keeper.frames[:8])  # landed, pinned
    for frame, seen in zip(keeper.frames, keeper.seen, strict=True):
        alone = Frame(images[frame.index % len(images)].copy(), frame.index, None,
                      frame.time_base, 0.0)
        engine.predict([alone])  # pageable memory, staged: the same numbers
        # the same engine, graph and input: only the copy's route differs (pinned vs staged)
        assert np.abs(frame.prob - alone.prob).max() <= 1e-6, f"frame {frame.index}"
        assert np.array_equal(frame.image, seen), f"frame {frame.index} was overwritten"
    engine.close()
