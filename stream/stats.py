"""Live and whole-run numbers: sliding-window FPS and latency percentiles per stage.

The HUD reads a :class:`Snapshot` of the last couple of seconds (``window`` samples); the
end-of-run summary reads the whole run (the last ``history`` samples per stage, enough for hours
of video at a few MB). All times are ``perf_counter`` seconds; latencies are milliseconds.
Thread-safe: the processing thread records, the main thread reads.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import numpy as np

# the order stages appear in the HUD and the summary; others follow in first-seen order
STAGE_ORDER = ("decode", "capture", "preprocess", "infer", "postprocess", "smooth", "render")
E2E = "end-to-end"


def percentiles(values, qs=(50, 95, 99)) -> tuple[float, ...]:
    """Percentiles of ``values`` (NaN for an empty sequence)."""
    if len(values) == 0:
        return tuple(float("nan") for _ in qs)
    return tuple(float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), qs))


class RateMeter:
    """Events per second over a sliding time window.

    Args:
        seconds: how far back the rate looks.
    """

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._count = 0

    def tick(self, now: float | None = None, n: int = 1) -> None:
        """Count ``n`` events at ``now``."""
        self.set_total(self._count + n, now)

    def set_total(self, total: int, now: float | None = None) -> None:
        """Record that ``total`` events have happened by ``now`` (for counters kept elsewhere)."""
        now = time.perf_counter() if now is None else now
        self._count = total
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.seconds:
            self._samples.popleft()

    def rate(self) -> float:
        """Events per second across the window (0 until two samples exist)."""
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


class History:
    """The last ``size`` values in a preallocated float32 ring: 4 bytes a sample.

    A deque of Python floats costs ~32 bytes a sample: 60 MB for 200 000 frames of 8 stages,
    which a GPU reaches within 30 minutes of video; this holds the same in 6 MB.
    """

    def __init__(self, size: int) -> None:
        self._values = np.empty(size, np.float32)  # pages are touched only as it fills
        self._count = 0

    def append(self, value: float) -> None:
        """Add ``value``, overwriting the oldest once full."""
        self._values[self._count % len(self._values)] = value
        self._count += 1

    def values(self) -> np.ndarray:
        """The values held (in ring order; percentiles do not care)."""
        return self._values[: min(self._count, len(self._values))]


@dataclass(frozen=True)
class Snapshot:
    """What the HUD shows: rates, latencies (p50, p95) per stage, drops."""

    capture_fps: float
    processed_fps: float
    latency: dict[str, tuple[float, float]]  # stage (and "end-to-end") → (p50, p95) ms
    dropped: int
    frames: int


@dataclass
class Summary:
    """The whole run, for the end-of-run table and for programs that call the pipeline."""

    frames_in: int  # frames the source delivered
    frames_out: int  # frames that went through every stage and every sink
    dropped: int  # frames the source or queues dropped (live sources, --realtime)
    wall_s: float  # from start to the last output closed
    fps: float  # frames_out / processing time
    latency: dict[str, tuple[float, float, float]]  # stage → (p50, p95, p99) ms
    device: str = ""
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


class PipelineStats:
    """Collects per-frame timings and counters from the pipeline threads.

    Args:
        window: samples per stage in the live (HUD) percentiles.
        rate_seconds: seconds the live FPS looks back.
        history: samples per stage kept for the whole-run percentiles.
    """

    def __init__(self, *, window: int = 120, rate_seconds: float = 2.0,
                 history: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._history = history
        self._live: dict[str, collections.deque[float]] = {}
        self._all: dict[str, History] = {}
        self.capture = RateMeter(rate_seconds)
        self.processed = RateMeter(rate_seconds)
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.started = time.perf_counter()
        self.first_out: float | None = None
        self.last_out: float | None = None

    def _add(self, stage: str, ms: float) -> None:
        if stage not in self._live:
            self._live[stage] = collections.deque(maxlen=self._window)
            self._all[stage] = History(self._history)
        self._live[stage].append(ms)
        self._all[stage].append(ms)

    def captured(self, total: int, dropped: int, now: float | None = None) -> None:
        """The source's counters: frames decoded or captured so far, and dropped so far."""
        with self._lock:
            self.capture.set_total(total, now)
            self.dropped = dropped

    def received(self, n: int = 1) -> None:
        """``n`` frames left the source queue for processing."""
        with self._lock:
            self.frames_in += n

    def processed_frame(self, timings: dict[str, float], capture_time: float,
                        now: float | None = None) -> float:
        """A frame finished processing and rendering; returns its end-to-end latency (ms)."""
        now = time.perf_counter() if now is None else now
        e2e = (now - capture_time) * 1e3
        with self._lock:
            for stage, ms in timings.items():
                self._add(stage, ms)
            self._add(E2E, e2e)
            self.processed.tick(now)
            self.first_out = now if self.first_out is None else self.first_out
            self.last_out = now
        return e2e

    def written(self, n: int = 1) -> None:
        """``n`` frames went through every sink."""
        with self._lock:
            self.frames_out += n

    def _stages(self) -> list[str]:
        seen = [s for s in STAGE_ORDER if s in self._live]
        seen += [s for s in self._live if s not in STAGE_ORDER and s != E2E]
        return seen + ([E2E] if E2E in self._live else [])

    def snapshot(self) -> Snapshot:
        """The live numbers (last ``window`` frames, last ``rate_seconds``)."""
        with self._lock:
            latency = {}
            for stage in self._stages():
                p50, p95 = percentiles(self._live[stage], (50, 95))
                latency[stage] = (p50, p95)
            return Snapshot(self.capture.rate(), self.processed.rate(), latency, self.dropped,
                            self.frames_in)

    def summary(self, *, device: str = "", interrupted: bool = False) -> Summary:
        """The whole run so far."""
        with self._lock:
            now = time.perf_counter()
            wall = now - self.started
            busy = (self.last_out - self.started) if self.last_out is not None else wall
            fps = self.frames_out / busy if busy > 0 else 0.0
            latency = {s: percentiles(self._all[s].values()) for s in self._stages()}
            return Summary(self.frames_in, self.frames_out, self.dropped, wall, fps, latency,
                           device=device, interrupted=interrupted)
