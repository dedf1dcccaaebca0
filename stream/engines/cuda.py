"""The CUDA engine: a pinned ring, three streams, and the device work as a CUDA graph.

One batch of frames goes through one ring slot:

==========  ===========================================================  ==============
host        copy the frames into the slot's pinned buffer (skipped for a
            frame whose picture is already pinned: a source that lands
            in :meth:`CudaEngine.pinned_array` memory, or
            :meth:`CudaEngine.staging_buffer`)
upload      H2D copy of each frame, from wherever it is pinned            → ``up1``
compute     wait ``up1``; fused preprocess kernel → generator → fp32
            probability → mask resize + threshold kernel (one graph
            replay, or the same ops eagerly with ``cuda_graph=False``)    → ``comp1``
download    wait ``comp1``; D2H of masks and probabilities                → ``down1``
host        wait ``down1`` (that event only) and copy out into the frames
==========  ===========================================================  ==============

With :meth:`CudaEngine.submit` / :meth:`CudaEngine.collect` (or :meth:`CudaEngine.predict_async`
and :meth:`InFlight.collect`, which the pipeline uses) several slots are in flight, so batch n+1
uploads while n computes and n−1 downloads. All buffers, events and graphs of a frame size
are made once (a "plan"); the hot path allocates no device or pinned memory and never
synchronises the whole device. CuPy is imported here only through
``stream.engines.gpu_kernels``, when an engine is built.

Timings (ms; a batch's stage time is recorded for every frame in it, as the CPU engine does):
``preprocess`` = staging copy + upload, ``infer`` = the compute-stream work (GPU preprocessing,
network, mask resize), ``postprocess`` = download + copy into the frames.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict

import numpy as np
import torch

from slsnet.generator import Generator
from stream.engines.cuda_ring import (
    Pending,
    Slot,
    chunks,
    graph_for,
    graph_sizes,
    pinned_tensor,
)
from stream.engines.gpu_kernels import CupyKernels
from stream.engines.resample import input_taps, output_taps
from stream.engines.torch_kernels import TorchKernels
from stream.errors import EngineError
from stream.frame import Frame

Kernels = CupyKernels | TorchKernels
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str) -> str:
    """``auto`` → fp16 (the GPU default); anything else must be a key of :data:`PRECISIONS`."""
    precision = "fp16" if precision == "auto" else precision
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose auto, {', '.join(PRECISIONS)}")
    return precision


def build_kernels(device: torch.device, kind: str = "auto") -> tuple[Kernels, str]:
    """The kernels for the CUDA engine, and a note when it had to fall back.

    Args:
        kind: "cupy" (an error without CuPy), "torch", or "auto" (CuPy when importable).
    """
    if kind == "torch":
        return TorchKernels(device), ""
    try:
        return CupyKernels(device), ""
    except ImportError:
        if kind == "cupy":
            raise EngineError("CuPy is not installed: pip install 'slsnet-live[gpu]'") from None
        return TorchKernels(device), "CuPy not installed: torch pre/postprocessing (slower)"


class InFlight:
    """Frames handed to :meth:`CudaEngine.predict_async`; :meth:`collect` brings them home."""

    def __init__(self, engine: CudaEngine, batches: list[Pending]) -> None:
        self.engine, self.batches = engine, batches

    def collect(self) -> None:
        """Block until every batch is back: ``prob`` and timings are set on its frames."""
        for pending in self.batches:
            self.engine.collect(pending)


class _Plan:
    """Everything that depends on (batch, W, H): the network input, taps, and the ring."""

    def __init__(self, engine: CudaEngine, size_wh: tuple[int, int]) -> None:
        b, s, kernels = engine.batch, engine.size, engine.kernels
        self.size_wh = size_wh
        self.x = torch.zeros((b, 3, s, s), dtype=engine.dtype, device=engine.device)
        self.x = self.x.contiguous(memory_format=engine.memory_format)
        self.k_x = kernels.view(self.x)
        self.in_taps = kernels.upload(*input_taps(size_wh, s))
        self.out_taps = kernels.upload(*output_taps(s, size_wh))
        self.slots = [Slot(b, size_wh, s, engine.device, kernels) for _ in range(engine.ring)]
        self.next = 0


class CudaEngine:
    """SLSNet on a CUDA GPU (implements the ``stream.engines.Engine`` protocol).

    Args:
        generator: the network (any device; a private copy is moved to ``device``).
        device: a CUDA device.
        precision: "fp16" (default, with channels_last), "bf16", "fp32" or "auto" (= fp16).
        cuda_graph: capture preprocess + network + mask into CUDA graphs per ring slot, one per
            size of :func:`graph_sizes` (a shorter batch replays the smallest that holds it).
        batch: frames per batch at most.
        ring: ring slots per frame size (batches in flight at most).
        kernels: "auto" (CuPy if installed, else torch ops), "cupy" or "torch".
        untrained: the generator has random weights (the HUD says so).
    """

    MAX_PLANS = 4  # frame sizes kept; the oldest plan is dropped beyond that

    def __init__(self, generator: Generator, *, device: torch.device, precision: str = "fp16",
                 cuda_graph: bool = True, batch: int = 1, ring: int = 3,
                 kernels: str = "auto", untrained: bool = False) -> None:
        if device.type != "cuda" or not torch.cuda.is_available():
            raise RuntimeError(f"the CUDA engine needs a CUDA device, got {device}")
        if batch < 1 or ring < 2:
            raise ValueError(f"batch must be >= 1 and ring >= 2 (got {batch}, {ring})")
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.device = torch.device("cuda", index)
        self.size = generator.config.input_size
        self.threshold = float(generator.config.threshold)
        self.untrained = untrained
        self.precision = resolve_precision(precision)
        self.dtype = PRECISIONS[self.precision]
        half = self.dtype != torch.float32
        self.memory_format = torch.channels_last if half else torch.contiguous_format
        self.cuda_graph, self.batch, self.ring = cuda_graph, batch, ring
        self.graph_sizes = graph_sizes(batch)
        with torch.cuda.device(self.device):
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv once
            self.kernels, self.note = build_kernels(self.device, kernels)
            self.upload_stream = torch.cuda.Stream(self.device)
            self.compute_stream = torch.cuda.Stream(self.device)
            self.download_stream = torch.cuda.Stream(self.device)
            self._pool = torch.cuda.graph_pool_handle() if cuda_graph else None
            # The weights are copied and cast on the compute stream (it does not wait for the
            # default stream by itself, and the generator may already live on this GPU).
            self.compute_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.compute_stream):
                model = copy.deepcopy(generator).eval().to(self.device, self.dtype)
                self.model = model.to(memory_format=self.memory_format)
        self._plans: OrderedDict[tuple[int, int], _Plan] = OrderedDict()
        self._lock = threading.RLock()  # one caller at a time (e.g. a keyframe worker thread)
        mode = "graph" if cuda_graph else "eager"
        self.name = f"cuda {self.precision} {mode}" + (f" batch {batch}" if batch > 1 else "")
        if self.note:
            self.name += f" ({self.kernels.name} kernels)"

    # ----------------------------------------------------------------------------- plans
    def prepare(self, size_wh: tuple[int, int]) -> None:
        """Build buffers, warm up and capture graphs for W×H frames now, not on the first frame."""
        with self._lock:
            self._plan(tuple(size_wh))

    def _plan(self, size_wh: tuple[int, int]) -> _Plan:
        plan = self._plans.get(size_wh)
        if plan is not None:
            self._plans.move_to_end(size_wh)
            return plan
        while len(self._plans) >= self.MAX_PLANS:
            old = self._plans.popitem(last=False)[1]
            for slot in old.slots:
                if slot.pending is not None:
                    self._finish(slot)
        with torch.cuda.device(self.device), torch.inference_mode():
            plan = self._build(size_wh)
        self._plans[size_wh] = plan
        return plan

    def _build(self, size_wh: tuple[int, int]) -> _Plan:
        comp = self.compute_stream
        with torch.cuda.stream(comp):
            plan = _Plan(self, size_wh)
            # Eager runs first: cuDNN picks its algorithms, CuPy compiles, lazy state settles;
            # none of that is allowed while capturing.
            for n in self.graph_sizes:
                for _ in range(3):
                    self._device_work(plan, plan.slots[0], n)
        if self.cuda_graph:
            # All graphs share one memory pool: they only run one after another on the compute
            # stream, and read and write only buffers made outside the capture.
            for slot in plan.slots:
                for n in self.graph_sizes:
                    graph = slot.graphs[n] = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=self._pool, stream=comp,
                                          capture_error_mode="thread_local"):
                        self._device_work(plan, slot, n)
        comp.synchronize()
        return plan

    def _device_work(self, plan: _Plan, slot: Slot, count: int) -> None:
        """Everything on the compute stream for one slot (what a graph captures)."""
        k, comp = self.kernels, self.compute_stream
        k.preprocess(slot.k_in, plan.in_taps, plan.k_x, self.dtype, frames=count, stream=comp)
        prob = self.model(plan.x[:count])  # count×1×S×S in the compute dtype
        slot.dev_prob[:count].copy_(prob[:, 0])
        k.postprocess(slot.k_prob, plan.out_taps, slot.k_mask, self.threshold,
                      frames=count, stream=comp)

    # ------------------------------------------------------------------------- hot path
    def pinned_array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A page-locked uint8 host array of ``shape``.

        A source that lands its pictures in such memory (through a
        :class:`stream.sources.FramePool`) has its frames uploaded with no host copy.
        """
        return torch.empty(shape, dtype=torch.uint8, pin_memory=True).numpy()

    def staging_buffer(self, size_wh: tuple[int, int]) -> np.ndarray:
        """The pinned H×W×3 buffer the next single-frame submit of this size reads.

        A frame whose ``image`` is this array skips the host copy (a decoder can write here).
        """
        with self._lock:
            plan = self._plan(tuple(size_wh))
            slot = plan.slots[plan.next]
            if slot.pending is not None:
                self._finish(slot)
            return slot.np_in[0]

    def submit(self, frames: list[Frame], *, masks: bool = True) -> Pending:
        """Start a batch of 1..``batch`` same-size frames; returns at once (see :meth:`collect`).

        ``masks``: also bring home the masks the GPU made at :attr:`threshold` (False: the
        probabilities only, as :meth:`predict`).

        Raises:
            ValueError: an empty or oversized batch, mixed sizes, or a non-BGR-uint8 image.
        """
        with self._lock:
            if not 1 <= len(frames) <= self.batch:
                raise ValueError(f"submit takes 1..{self.batch} frames, got {len(frames)}")
            w, h = size_wh = frames[0].size_wh
            plan = self._plan(size_wh)
            slot = plan.slots[plan.next]
            plan.next = (plan.next + 1) % len(plan.slots)
            if slot.pending is not None:  # the ring is full: the oldest batch must come home first
                self._finish(slot)
            t0 = time.perf_counter()
            slot.sources = []
            for j, frame in enumerate(frames):
                image = frame.image
                if image.shape != (h, w, 3) or image.dtype != np.uint8:
                    raise ValueError(f"frame {frame.index}: expected {h}×{w}×3 uint8 BGR, "
                                     f"got {image.shape} {image.dtype}")
                pinned = pinned_tensor(image)  # the frame keeps this memory until collected
                if pinned is None:
                    if image.ctypes.data != slot.np_in[j].ctypes.data:
                        np.copyto(slot.np_in[j], image)
                    pinned = slot.host_in[j]
                slot.sources.append(pinned)
            slot.stage_ms = (time.perf_counter() - t0) * 1e3
            self._launch(plan, slot, len(frames), masks)
            slot.pending = Pending(frames, slot, masks)
            return slot.pending

    def _launch(self, plan: _Plan, slot: Slot, count: int, masks: bool) -> None:
        up, comp, down, ev = self.upload_stream, self.compute_stream, self.download_stream, slot.ev
        # the plan's buffers are inference tensors: they may only be written in inference mode
        with torch.cuda.device(self.device), torch.inference_mode():
            ev["up0"].record(up)
            with torch.cuda.stream(up):
                for j, source in enumerate(slot.sources):
                    slot.dev_in[j].copy_(source, non_blocking=True)
            ev["up1"].record(up)
            comp.wait_event(ev["up1"])
            ev["comp0"].record(comp)
            with torch.cuda.stream(comp):
                if slot.graphs:  # rows past ``count`` hold stale frames and are ignored
                    slot.graphs[graph_for(count, self.graph_sizes)].replay()
                else:
                    self._device_work(plan, slot, count)
            ev["comp1"].record(comp)
            down.wait_event(ev["comp1"])
            ev["down0"].record(down)
            with torch.cuda.stream(down):
                if masks:
                    slot.host_mask[:count].copy_(slot.dev_mask[:count], non_blocking=True)
                slot.host_prob[:count].copy_(slot.dev_prob[:count], non_blocking=True)
            ev["down1"].record(down)

    def _finish(self, slot: Slot) -> None:
        pending, ev = slot.pending, slot.ev
        ev["down1"].synchronize()  # this batch only; other slots keep running
        t0 = time.perf_counter()
        for j, frame in enumerate(pending.frames):
            frame.prob = slot.np_prob[j].copy()  # the ring is reused: frames own their copies
            if pending.masks:
                frame.mask = slot.np_mask[j].copy()
        copy_ms = (time.perf_counter() - t0) * 1e3
        pre = slot.stage_ms + ev["up0"].elapsed_time(ev["up1"])
        infer = ev["comp0"].elapsed_time(ev["comp1"])
        post = ev["down0"].elapsed_time(ev["down1"]) + copy_ms
        for frame in pending.frames:
            frame.timings.update(preprocess=pre, infer=infer, postprocess=post)
        slot.pending, pending.done, slot.sources = None, True, []

    def collect(self, pending: Pending) -> list[Frame]:
        """Wait for a submitted batch; sets ``prob``, ``mask`` and timings on its frames."""
        with self._lock:
            if not pending.done:
                self._finish(pending.slot)
        return pending.frames

    def predict(self, frames: list[Frame]) -> None:
        """Sets ``frame.prob`` (S×S float32) on every frame (see :class:`stream.engines.Engine`).

        Frames are cut into batches of same-size frames; up to ``ring`` batches are in flight.
        """
        self._run(frames, masks=False)

    def infer(self, frames: list[Frame]) -> None:
        """Sets ``frame.prob`` and ``frame.mask`` (H×W uint8 0/1, made on the GPU)."""
        self._run(frames, masks=True)

    def predict_async(self, frames: list[Frame], *, masks: bool = False) -> InFlight:
        """Start :meth:`predict` on ``frames`` and return at once; ``collect()`` on the result.

        The pipeline starts frame n+1 this way before it finishes frame n, so the upload and
        the network of one frame overlap the host work (smoothing, render, output) of the other.
        A frame's picture must stay unchanged until then (pooled pictures are never reused
        while a frame refers to them).
        """
        with self._lock:
            batches = [self.submit(chunk, masks=masks) for chunk in chunks(frames, self.batch)]
        return InFlight(self, batches)

    def _run(self, frames: list[Frame], *, masks: bool) -> None:
        with self._lock:
            self.predict_async(frames, masks=masks).collect()

    def close(self) -> None:
        """Finish what is in flight and free the plans (buffers and graphs)."""
        with self._lock:
            for plan in self._plans.values():
                for slot in plan.slots:
                    if slot.pending is not None:
                        self._finish(slot)
            self._plans.clear()
