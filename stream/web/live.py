"""The web demo's Live tab: browser webcam frames in, overlaid frames and a readout out.

Every browser tab has its own :class:`LiveSession` (kept in a ``gr.State``): its smoother, its
frame counter and its meters. All sessions share the one engine of the process through
:class:`stream.web.runtime.SharedEngine`, which serialises calls into the network; each has its
own :class:`~stream.segmenter.Segmenter` (smoother, threshold, renderer, meters).

The server sees a webcam frame only when it arrives, and its result leaves the server well before
the page shows it: upload, Gradio's queue, download and display are outside what it can time
(on 2026-12-04, with the CPU loaded, the page showed frames 2 to 11 camera frames behind while
the server's part was 30-60 ms). So the page times the whole trip with its own clock
(``performance.now()``, :mod:`stream.web.app`): the time it grabbed a frame off the camera goes up
with the frame, comes back with its result, and once that result is on screen the page sends
"grab time, lag" up with a later frame. :meth:`LiveSession.page_measured` keeps those lags, and the
readout leads with them (camera → shown), the server's own part after them.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from fractions import Fraction

import cv2
import numpy as np

from stream.assembly import RunConfig, build_pipeline, open_input
from stream.errors import StreamError
from stream.frame import Frame
from stream.outputs import Renderer, smoothing_text
from stream.segmenter import Segmenter
from stream.sources import is_camera_spec
from stream.stats import E2E, PipelineStats, Snapshot, percentiles

BROWSER_TIME_BASE = Fraction(1, 1000)  # browser frames carry no PTS; sinks would use ms
IDLE_RESET_S = 10.0  # a pause this long (stream stopped, restarted later) is a cut
STOPPED_AFTER_S = 1.5  # no frame for this long: the stream was stopped (or its time ran out)
SHOWN_WINDOW = 60  # camera → shown lags the readout covers (as many as the server's samples)


class LiveSession:
    """The state of one browser tab's live stream: its segmenter (smoother, renderer, meters).

    Args:
        mode: smoothing mode (``stream.smoothing.CHOICES``).
        threshold: probability above which a pixel is lesion.
        engine: the process's shared engine.
        fps: the expected frame rate, for smoothers that pace themselves (keyframe).
    """

    def __init__(self, mode: str, threshold: float, *, engine, fps: float = 10.0) -> None:
        self.mode, self.threshold = mode, threshold
        self.stats = PipelineStats(window=60, history=600)  # a tab may stream for hours
        # the frame's time before it reached the server is the page's to measure: the HUD's
        # figure is the server's part only, and says so
        renderer = Renderer(device=engine.name, untrained=engine.untrained, latency="server")
        # the browser waits for each answer, so the network runs in the handler (no thread)
        self.segmenter = Segmenter.build(engine, mode, live=True, fps=fps, threshold=threshold,
                                         renderer=renderer, stats=self.stats)
        self.index = 0  # index of the next frame in this session
        self.last_arrival: float | None = None
        self.size_wh: tuple[int, int] | None = None
        self.notes: dict = {}  # the last frame's notes (smoothing mode, keyframe interval)
        self.shown: collections.deque[float] = collections.deque(maxlen=SHOWN_WINDOW)  # ms
        self.shown_grab: float | None = None  # the page's grab time of the last lag kept

    @property
    def smoother(self):
        """This tab's smoother (its segmenter's)."""
        return self.segmenter.smoother

    def matches(self, mode: str, threshold: float) -> bool:
        """Whether this session was built for these settings."""
        return self.mode == mode and abs(self.threshold - threshold) < 1e-9

    def adopt(self, old: LiveSession) -> None:
        """Continue ``old``'s counters and meters (the settings changed mid-stream)."""
        self.stats, self.index, self.last_arrival = old.stats, old.index, old.last_arrival
        self.shown, self.shown_grab = old.shown, old.shown_grab
        self.segmenter.stats = old.stats

    def page_measured(self, report: str | None) -> None:
        """Keep a camera → shown lag the page measured: ``"GRAB_MS LAG_MS"``, each grab once.

        The page sends its latest measurement with every frame until it has a newer one; anything
        that is not two finite numbers with a lag of at least 0 is ignored (it is not a user's
        input, and a client without the page's script sends nothing).
        """
        try:
            grab, lag = (float(v) for v in (report or "").split())
        except ValueError:
            return
        if not (math.isfinite(grab) and math.isfinite(lag) and lag >= 0) or grab == self.shown_grab:
            return
        self.shown_grab = grab
        self.shown.append(lag)

    def next_frame(self, bgr: np.ndarray) -> Frame:
        """Wrap a browser frame, counting its arrival."""
        now = time.perf_counter()
        if self.last_arrival is not None and now - self.last_arrival > IDLE_RESET_S:
            self.segmenter.reset()  # the stream was stopped and restarted: a cut
        self.last_arrival = now
        frame = Frame(image=bgr, index=self.index, pts=None, time_base=BROWSER_TIME_BASE,
                      capture_time=now)
        self.index += 1
        self.stats.received()
        self.stats.captured(self.stats.frames_in, 0, now)
        return frame


def readout(session: LiveSession, snapshot: Snapshot, engine_name: str,
            weights_note: str | None) -> str:
    """The Markdown under the live video: the lag the page measured, the server's part, settings.

    The lag is the page's own (module docstring): from grabbing a frame off the camera to its
    result on screen, over the last :data:`SHOWN_WINDOW` results it showed. The server's time
    runs from a frame's arrival to its result. With keyframe smoothing the readout says how few
    frames the network sees.
    """
    stages = " · ".join(f"{s} {p50:.1f}" for s, (p50, _) in snapshot.latency.items() if s != E2E)
    e2e = snapshot.latency.get(E2E, (float("nan"), float("nan")))
    w, h = session.size_wh or (0, 0)
    if session.shown:
        p50, p95 = percentiles(session.shown, (50, 95))
        lag = (f"**camera → shown p50 {p50:.0f} / p95 {p95:.0f} ms** over the last "
               f"{len(session.shown)} results")
    else:
        lag = "**camera → shown: not measured yet**"
    text = (
        f"{lag}, timed in this page from grabbing a camera frame to showing its result · "
        f"{snapshot.processed_fps:.1f} fps  \n"
        f"server p50 {e2e[0]:.0f} / p95 {e2e[1]:.0f} ms a frame (arrival to result); the rest is "
        "upload, queue, download and display  \n"
        f"per stage, p50 ms: {stages}  \n"
        f"frame {snapshot.frames} · {w}×{h} · {smoothing_text(session.notes)} · threshold "
        f"{session.threshold:.2f} · {engine_name}"
    )
    interval = session.notes.get("keyframe_interval")
    if session.notes.get("smooth") == "keyframe" and interval:
        text += (f"  \nthe network runs on 1 frame in {interval} (keyframes); optical flow "
                 "carries the mask between them")
    if weights_note:
        text += f"  \n⚠ {weights_note}"
    return text


def stopped_readout(session: LiveSession | None, *, now: float | None = None) -> str | None:
    """The readout once the browser has stopped streaming (None: still streaming, or never).

    Args:
        session: the tab's state.
        now: ``time.perf_counter()`` (default: now).
    """
    if session is None or session.last_arrival is None:
        return None
    now = time.perf_counter() if now is None else now
    if now - session.last_arrival < STOPPED_AFTER_S:
        return None
    return (f"**Stopped** after {session.index} frames. Press the record button under the "
            "camera pane to stream again.")


def browser_frame(
    rgb: np.ndarray | None,
    session: LiveSession | None,
    mode: str,
    threshold: float,
    hud: bool,
    grabbed: float | None = None,
    shown: str | None = None,
    *,
    runtime,
) -> tuple[np.ndarray | None, str, LiveSession | None, float | None]:
    """Segment one webcam frame for one tab (the Live tab's stream handler).

    Args:
        rgb: H×W×3 uint8 RGB from the browser, or None before the camera delivers.
        session: this tab's state, None on its first frame.
        mode: smoothing mode chosen in the page.
        threshold: threshold chosen in the page.
        hud: whether to draw the HUD into the frame.
        grabbed: when the page grabbed this frame off the camera (its ``performance.now()`` ms).
        shown: the page's latest camera → shown measurement (:meth:`LiveSession.page_measured`).
        runtime: the process's :class:`stream.web.runtime.Runtime`.

    Returns:
        (overlaid H×W×3 uint8 RGB, readout Markdown, the session to keep, ``grabbed`` back).
    """
    if rgb is None:
        return None, "waiting for the camera…", session, None
    engine = runtime.engine
    if session is None or not session.matches(mode, threshold):
        rate = (session.stats.processed.rate() or 10.0) if session else 10.0
        fresh = LiveSession(mode, threshold, engine=runtime.shared, fps=rate)
        if session is not None:
            fresh.adopt(session)
        session = fresh
    session.page_measured(shown)
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2BGR)
    frame = session.next_frame(bgr)
    session.size_wh = frame.size_wh
    session.segmenter.renderer.show_hud = bool(hud)
    session.segmenter.step([frame], snapshot=session.stats.snapshot())
    session.notes = frame.notes
    snapshot = session.stats.snapshot()
    out = cv2.cvtColor(frame.rendered, cv2.COLOR_BGR2RGB)
    text = readout(session, snapshot, engine.name, runtime.weights_note)
    return out, text, session, grabbed


class LatestFrame:
    """A sink that keeps the newest rendered frame for the page (the Server camera tab).

    It is one of the pipeline's sinks, so it sees exactly what ``--output`` would write.
    """

    name = "web view"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.frame: Frame | None = None
        self.count = 0
        self.closed = False

    def open(self, info) -> None:
        """Nothing to prepare."""

    def write(self, frame: Frame) -> None:
        """Keep ``frame`` and wake the viewers."""
        with self._cond:
            self.frame, self.count = frame, self.count + 1
            self._cond.notify_all()

    def close(self) -> None:
        """Wake the viewers for good (idempotent)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_newer(self, seen: int, timeout: float) -> tuple[Frame | None, int]:
        """The newest frame once it is newer than the ``seen``-th, or (None, seen) on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self.count > seen or self.closed, timeout)
            if self.count > seen:
                return self.frame, self.count
            return None, seen


class ServerCamera:
    """The server's camera through the capture pipeline, shared by every viewer.

    The pipeline starts with the first viewer and stops when the last one leaves, so the camera
    is open only while someone watches.

    Args:
        runtime: the process's :class:`stream.web.runtime.Runtime` (engine, smoothing default).
        spec: camera index or /dev/video* path (a video file plays paced, like a camera).
    """

    def __init__(self, runtime, spec: int | str) -> None:
        self.runtime, self.spec = runtime, spec
        self._lock = threading.Lock()
        self._viewers = 0
        self.pipeline = None
        self.view: LatestFrame | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def join(self) -> LatestFrame:
        """Become a viewer; opens the camera and starts the pipeline if nobody watched yet."""
        with self._lock:
            if self._viewers == 0 or self._thread is None or not self._thread.is_alive():
                engine = self.runtime.shared
                config = RunConfig(device=engine.device, source=self.spec,
                                   realtime=not is_camera_spec(self.spec),
                                   smooth=self.runtime.options.smooth)
                source = open_input(config)  # live: a queue of LIVE_QUEUE frames
                self.view, self.error = LatestFrame(), None
                # the viewers share the engine with the browser tabs: no extra network thread
                segmenter = Segmenter.build(
                    engine, config.smooth, live=True, fps=source.info.fps,
                    renderer=Renderer(device=engine.name, untrained=engine.untrained))
                self.pipeline = build_pipeline(config, source, engine, sinks=[self.view],
                                               segmenter=segmenter)
                self._thread = threading.Thread(target=self._run, name="server camera",
                                                daemon=True)
                self._thread.start()
            self._viewers += 1
            return self.view

    def _run(self) -> None:
        try:
            self.pipeline.run(handle_sigint=False)
        except BaseException as exc:  # noqa: BLE001 - shown to the viewers
            self.error = exc
        finally:
            self.view.close()

    def leave(self) -> None:
        """Stop being a viewer; the last one stops the pipeline and closes the camera."""
        with self._lock:
            self._viewers = max(0, self._viewers - 1)
            if self._viewers == 0 and self.pipeline is not None:
                self.pipeline.request_stop()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the pipeline whatever the viewers do (server shutdown)."""
        with self._lock:
            self._viewers = 0
            if self.pipeline is not None:
                self.pipeline.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)


def server_camera(*, runtime, idle_s: float = 5.0):
    """The Server camera tab's generator: rendered frames and a readout until stopped.

    Args:
        runtime: the process's :class:`stream.web.runtime.Runtime` (its ``camera`` is shared).
        idle_s: give up when the camera sends nothing for this long.

    Yields:
        (H×W×3 uint8 RGB, readout Markdown).
    """
    camera = runtime.camera
    view = camera.join()
    seen = 0
    try:
        while True:
            frame, seen = view.wait_newer(seen, idle_s)
            if frame is None:
                if camera.error is not None:
                    raise camera.error
                if view.closed:
                    last = view.frame.rendered if view.frame is not None else None
                    rgb = None if last is None else cv2.cvtColor(last, cv2.COLOR_BGR2RGB)
                    yield rgb, "the camera stream has ended"
                    return
                raise StreamError(f"camera {camera.spec} sent no frame for {idle_s:.0f} s")
            stats = camera.pipeline.stats.snapshot()
            e2e = stats.latency.get(E2E, (float("nan"),) * 2)
            text = (f"**server camera {stats.capture_fps:.1f} fps**, processed "
                    f"{stats.processed_fps:.1f} fps, dropped {stats.dropped} · latency p50 "
                    f"{e2e[0]:.0f} / p95 {e2e[1]:.0f} ms · frame {seen} · {runtime.engine.name}")
            yield cv2.cvtColor(frame.rendered, cv2.COLOR_BGR2RGB), text
    finally:
        camera.leave()
