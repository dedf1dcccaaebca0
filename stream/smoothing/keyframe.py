"""Keyframe propagation: the network on some frames, optical flow carrying its output between.

:class:`Keyframe` runs the network synchronously on every k-th frame (k adapts to the measured
network time); :class:`AsyncKeyframe` runs it on a worker thread beside the pipeline, so the
pipeline's own thread never waits for it: each result is carried forward through the flow that
accumulated while it was being computed. Both are ``--smooth keyframe``
(:func:`stream.smoothing.build_smoother` picks the second when it is given an
:class:`~stream.engines.thread.EngineThread`, which :class:`stream.segmenter.Segmenter` owns).
"""

from __future__ import annotations

import math
import time

import numpy as np

from stream.engines.base import NET_STAGES
from stream.engines.thread import EngineThread
from stream.frame import Frame
from stream.smoothing.blend import FlowSmoother
from stream.smoothing.optical_flow import compose, identity_map, remap

# floor 0.5: at a keyframe a confident network output that contradicts the carried mask only
# meets it halfway, and hysteresis keeps the old side until a second keyframe agrees; with 0.3
# every keyframe snapped to the network and fast pans flickered more than with no smoothing
# (chosen on training-image clips of the temporal benchmark, docs/history.md)
KEYFRAME_DEFAULTS = {"history": 0.8, "floor": 0.5, "hysteresis": 0.1, "sigma": 30.0}
HEADROOM = 0.8  # share of the frame interval the network and smoothing may take per frame
PROP_MS = 3.0  # a first guess at a frame's own smoothing cost (optical flow, blend)


def keyframe_interval(net_ms: float, frame_ms: float, *, prop_ms: float = PROP_MS,
                      headroom: float = HEADROOM, max_interval: int = 8) -> int:
    """The keyframe interval k that keeps the average time per frame within the budget.

    One frame in k pays the network (``net_ms``), every frame its own smoothing (``prop_ms``);
    k = 1 means every frame can go through the network at the source's rate.

    Args:
        net_ms: the network's time per frame (preprocess + infer + postprocess).
        frame_ms: the source's frame interval.
        prop_ms: a frame's smoothing cost.
        headroom: the share of ``frame_ms`` the two may take.
        max_interval: the largest k.
    """
    budget = headroom * frame_ms - prop_ms
    if budget <= 0:  # smoothing alone eats the frame interval: space keyframes out fully
        return max_interval
    return int(min(max(math.ceil(net_ms / budget), 1), max_interval))


class Keyframe(FlowSmoother):
    """``--smooth keyframe``: the network on every k-th frame, optical flow in between.

    Between keyframes the last keyframe's output is warped through the chained flow (one
    resampling, however many frames), so it neither blurs nor lags. On keyframes the fresh
    network output is blended with the propagated one as in ``flow``.

    Args:
        interval: a fixed k; None adapts k to the measured network and propagation times so that
            the average time per frame stays within ``headroom`` of the source's frame interval.
        max_interval: the largest adaptive k.
        fps: the source rate, used until frame timestamps give it (None: 30).
        headroom: fraction of the frame interval the stage may spend per frame on average.
        **options: passed to :class:`FlowSmoother`.
    """

    mode = "keyframe"

    def __init__(
        self,
        *,
        interval: int | None = None,
        max_interval: int = 8,
        fps: float | None = None,
        headroom: float = HEADROOM,
        **options,
    ):
        # A keyframe's fresh output is worth more than the propagated one, whose error grows
        # with every warp: a shorter memory than plain ``flow`` (see KEYFRAME_DEFAULTS).
        for key, value in KEYFRAME_DEFAULTS.items():
            options.setdefault(key, value)
        super().__init__(**options)
        if interval is not None and interval < 1:
            raise ValueError(f"keyframe interval must be at least 1, got {interval}")
        self.fixed, self.max_interval, self.headroom = interval, max_interval, headroom
        self.frame_ms = 1000.0 / (fps or 30.0)
        self.net_ms: float | None = None  # running mean of preprocess + infer + postprocess
        self.prop_ms = PROP_MS  # running mean of a propagated frame's own cost
        self.since_key = 0  # frames scheduled since the last keyframe
        self.started = False  # a keyframe has been scheduled since the last reset
        self.acc: np.ndarray | None = None  # S×S×2: current pixels → keyframe pixels
        self.key_prob: np.ndarray | None = None
        self.prev_pts: tuple[int, float] | None = None  # (index, seconds) of the last frame

    @property
    def interval(self) -> int:
        """The keyframe interval k in force."""
        if self.fixed is not None:
            return self.fixed
        if self.net_ms is None:
            return 1
        return keyframe_interval(self.net_ms, self.frame_ms, prop_ms=self.prop_ms,
                                 headroom=self.headroom, max_interval=self.max_interval)

    def reset(self) -> None:
        """Forget the keyframe; the next frame is one (measured timings are kept)."""
        super().reset()
        self.since_key, self.started = 0, False
        self.acc = self.key_prob = None
        self.prev_pts = None

    def _clock(self, frame: Frame) -> None:
        """Follow the source's frame interval from timestamps (a running mean)."""
        t = frame.pts_seconds
        if t is not None and self.prev_pts is not None:
            frames, seconds = frame.index - self.prev_pts[0], t - self.prev_pts[1]
            if frames > 0 and 0 < seconds < 1:  # dropped frames widen both
                self.frame_ms += 0.1 * (seconds * 1e3 / frames - self.frame_ms)
        self.prev_pts = None if t is None else (frame.index, t)

    def _measure(self, frame: Frame) -> None:
        """Fold the network's stage times on ``frame`` into the running mean."""
        spent = sum(frame.timings.get(k, 0.0) for k in NET_STAGES)
        if spent > 0:
            self.net_ms = (
                spent if self.net_ms is None else self.net_ms + 0.2 * (spent - self.net_ms)
            )

    def wants_inference(self, frame: Frame) -> bool:
        """True on keyframes: after a reset or cut, every k frames, or where tracking fails."""
        self._clock(frame)
        motion = self._track(frame)
        key = motion is None or not self.started or self.since_key + 1 >= self.interval
        self.started = True
        self.since_key = 0 if key else self.since_key + 1
        return key

    def __call__(self, frame: Frame) -> None:
        """Keyframes: smooth as ``flow``; other frames: carry the keyframe's probability along."""
        motion, cut, track_ms = self._tracked(frame)
        t0 = time.perf_counter()
        keyframe = frame.prob is not None  # the network ran on this frame
        if keyframe:
            self._measure(frame)
            self._blend(frame, motion)
            self.key_prob, self.acc = self.prev, identity_map(self.tracker.size)
        else:
            if motion is None or self.key_prob is None:
                raise RuntimeError("keyframe smoother: no network output on a frame that needs it")
            self.acc = compose(self.acc, motion)
            self._finish(frame, remap(self.key_prob, self.acc), motion.coords)
        frame.notes.update(smooth=self.mode, cut=cut, keyframe=keyframe)
        frame.notes["keyframe_interval"] = self.interval
        spent = track_ms + (time.perf_counter() - t0) * 1e3
        if not keyframe:
            self.prop_ms += 0.2 * (spent - self.prop_ms)
        frame.timings["smooth"] = spent


class AsyncKeyframe(Keyframe):
    """``--smooth keyframe`` with the network on its own thread.

    On every frame: move the last output along the flow; if the worker has finished, carry its
    result (computed for a frame some frames back) forward through the flow accumulated since,
    blend it in as ``flow`` does, and hand the worker the current frame. The keyframe interval
    is thus the network's latency in frames, and the pipeline's thread only ever waits for the
    network on the first frame after a reset or cut, which has nothing to carry.

    Args:
        network: the engine on its own thread; its owner closes it.
        **options: passed to :class:`Keyframe` (``interval`` and ``max_interval`` do not apply).
    """

    def __init__(self, *, network: EngineThread, **options):
        super().__init__(**options)
        self.network = network
        self.busy = False  # a job is with the worker
        self.generation = 0  # bumped on reset: results of older jobs are dropped
        self.pending_acc: np.ndarray | None = None  # current pixels → the job's frame pixels
        self.last_key: int | None = None  # index of the last frame a result arrived on
        self.latency = 1  # frames between the last two results

    @property
    def interval(self) -> int:
        """Frames between the last two network results."""
        return self.latency

    def reset(self) -> None:
        """Forget everything; a job still running finishes and is dropped."""
        super().reset()
        self._restart()

    def _restart(self) -> None:
        """Drop the outputs and any job in flight, but keep tracking (the frame is not lost)."""
        self.generation += 1
        self.prev = self.decided = self.key_prob = self.acc = self.pending_acc = None
        self.last_key = None

    def wants_inference(self, frame: Frame) -> bool:
        """Never: the worker runs the network. Tracks the frame (batches ask ahead)."""
        self._clock(frame)
        self._track(frame)
        return False

    def _submit(self, frame: Frame) -> None:
        job = Frame(frame.image.copy(), frame.index, frame.pts, frame.time_base, frame.capture_time)
        self.network.submit(self.generation, job)
        self.busy, self.pending_acc = True, identity_map(self.tracker.size)

    def _collect(self, *, block: bool) -> Frame | None:
        """The worker's result for the current generation, if there is one (or, blocking, when)."""
        while self.busy:
            found = self.network.collect(block=block)
            if found is None:
                return None
            tag, job, exc = found
            self.busy = False
            if exc is not None:
                raise exc
            if tag == self.generation:
                return job
        return None

    def __call__(self, frame: Frame) -> None:
        """Carry the last output along; fold in a finished network result; feed the worker."""
        motion, cut, track_ms = self._tracked(frame)
        t0 = time.perf_counter()
        if motion is None and self.key_prob is not None:  # a cut the tracker found
            self._restart()
        elif motion is not None and self.acc is not None:
            self.acc = compose(self.acc, motion)
            if self.pending_acc is not None:
                self.pending_acc = compose(self.pending_acc, motion)
        result, submitted = self._collect(block=False), False
        if result is None and self.key_prob is None:  # nothing to carry: wait for this frame
            self._collect(block=True)  # a job from before the reset, if any
            self._submit(frame)
            result, submitted = self._collect(block=True), True
        if result is not None:
            self._measure(result)
            frame.prob = remap(result.prob, self.pending_acc)  # into this frame
            self._blend(frame, motion)
            self.key_prob, self.acc, self.pending_acc = (
                self.prev,
                identity_map(self.tracker.size),
                None,
            )
            if self.last_key is not None:
                self.latency = max(1, frame.index - self.last_key)
            self.last_key = frame.index
        else:
            self._finish(frame, remap(self.key_prob, self.acc), motion.coords)
        if not self.busy and not submitted:
            self._submit(frame)
        frame.notes.update(smooth=self.mode, cut=cut, keyframe=result is not None)
        frame.notes["keyframe_interval"] = self.interval
        frame.timings["smooth"] = track_ms + (time.perf_counter() - t0) * 1e3
