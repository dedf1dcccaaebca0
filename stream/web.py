"""``python demo.py --gradio``: the browser demo (Live webcam, Video upload, Image upload).

One :class:`Runtime` per process holds the engine (the model is loaded once) and the work
folders; every browser tab keeps its own smoothing state in a ``gr.State``. The page is laid out
in :mod:`stream.web_app`; the handlers live in :mod:`stream.web_live` (webcam, server camera)
and :mod:`stream.web_files` (uploads).

    python demo.py --gradio [--host 127.0.0.1] [--port 7860] [--weights W] [--device D]
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from stream.engine import UNTRAINED_WARNING, Engine
from stream.frame import Frame
from stream.smoothing import DEFAULT_MODE
from stream.web_files import JobDirs
from stream.web_live import ServerCamera


@dataclass(frozen=True)
class WebOptions:
    """How the web demo is served (from the command line)."""

    host: str = "127.0.0.1"
    port: int = 7860
    camera: int | str | None = None  # a server-side camera for the "Server camera" tab
    max_upload_mb: int = 500  # larger uploads are refused (by Gradio and again by the handlers)
    smooth: str = DEFAULT_MODE  # the smoothing mode a new tab starts with
    hud: bool = True  # whether a new tab draws the HUD into the live frames
    stream_every: float = 0.05  # s between webcam frames the browser sends at most
    time_limit: int = 600  # s a single live stream may run before the browser must restart it
    concurrency: int = 4  # live streams served at once; more wait in Gradio's queue


class SharedEngine:
    """An :class:`~stream.engine.Engine` shared by many sessions, seen by one of them.

    Calls into the network are serialised by one lock (a CUDA graph's buffers, and the
    threshold attribute, belong to one caller at a time); each view has its own threshold.

    Args:
        engine: the process's engine.
        lock: the lock every view of ``engine`` shares.
        threshold: this caller's threshold (None: the engine's default).
    """

    def __init__(self, engine: Engine, lock: threading.Lock, threshold: float | None) -> None:
        self._engine, self._lock = engine, lock
        self.device, self.size, self.name = engine.device, engine.size, engine.name
        self.untrained = engine.untrained
        self.threshold = engine.threshold if threshold is None else float(threshold)

    def infer(self, frames: list[Frame]) -> None:
        """As :meth:`Engine.infer`, with this view's threshold."""
        with self._lock:
            default = self._engine.threshold
            self._engine.threshold = self.threshold
            try:
                self._engine.infer(frames)
            finally:
                self._engine.threshold = default


class Runtime:
    """What all sessions share: the engine (one model per process), a lock, the job folders.

    Args:
        engine: from :func:`stream.engine.build_engine`.
        options: the serving options.
    """

    def __init__(self, engine: Engine, options: WebOptions) -> None:
        self.engine = engine
        self.options = options
        self.jobs = JobDirs()
        self.cache: Path | None = None  # Gradio's cache folder, once serve() has made it
        self.camera = ServerCamera(self, options.camera) if options.camera is not None else None
        self._lock = threading.Lock()  # the engine (and a CUDA graph's buffers) is not reentrant
        self.weights_note = (
            f"{UNTRAINED_WARNING}: no trained weights were found, so the masks are meaningless "
            "(pass --weights PATH)" if engine.untrained else None
        )

    def engine_for(self, *, threshold: float | None) -> SharedEngine:
        """The shared engine as one caller sees it: serialised, with its own threshold."""
        return SharedEngine(self.engine, self._lock, threshold)

    def segment(self, frame: Frame, smoother=None, *, threshold: float | None = None) -> None:
        """Fill ``frame.prob`` and ``frame.mask`` through the shared engine and ``smoother``.

        Args:
            frame: the frame to segment (any size).
            smoother: this session's smoother, or None for a still image.
            threshold: this session's threshold (None: the engine's default).
        """
        if smoother is None or smoother.wants_inference(frame):
            self.engine_for(threshold=threshold).infer([frame])
        if smoother is not None:
            smoother(frame)

    def close(self) -> None:
        """Stop the server camera and remove every job folder and Gradio's cache."""
        if self.camera is not None:
            self.camera.close()
        self.jobs.close()
        if self.cache is not None:
            shutil.rmtree(self.cache, ignore_errors=True)


def serve(engine: Engine, options: WebOptions, *, block: bool = True):
    """Build the page and serve it until Ctrl-C (``block``) or return the launched app.

    Args:
        engine: the engine every session shares.
        options: host, port and limits.
        block: wait until the server is stopped; on return everything the demo wrote is removed.
    """
    from stream.web_app import CSS, build_app

    runtime = Runtime(engine, options)
    # Gradio keeps uploads, results and live frames in GRADIO_TEMP_DIR (read when components
    # are built and when the server starts): a private folder per process, removed on exit,
    # leaves nothing behind, not even the temp files of uploads Gradio refused half-way.
    parent = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    Path(parent).mkdir(parents=True, exist_ok=True)
    runtime.cache = Path(tempfile.mkdtemp(prefix="slsnet-web-cache-", dir=parent))
    os.environ["GRADIO_TEMP_DIR"] = str(runtime.cache)
    app = build_app(runtime)
    app.queue(default_concurrency_limit=options.concurrency)
    if block and threading.current_thread() is threading.main_thread():
        # a service manager's SIGTERM cleans up like Ctrl-C
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        app.launch(
            server_name=options.host,
            server_port=options.port,
            max_file_size=options.max_upload_mb * 1024 * 1024,
            show_error=True,
            css=CSS,
            prevent_thread_lock=True,
        )
        if not block:
            return app, runtime
        app.block_thread()  # returns after Ctrl-C, having closed the server
    except KeyboardInterrupt:  # Ctrl-C while the server was still starting
        pass
    except OSError as exc:  # port taken, address not local
        runtime.close()
        raise OSError(f"cannot serve on {options.host}:{options.port}: {exc}") from None
    finally:
        if block:
            app.close()
            runtime.close()
    return None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_web(args, *, console) -> int:
    """``demo.py --gradio``: build the engine from the parsed flags and serve until Ctrl-C.

    Raises:
        ValueError: a flag that only applies to a single run (``--video``, ``--output``, …).
    """
    from rich.panel import Panel

    from stream.engine import DEFAULT_WEIGHTS, build_engine, default_threads, resolve_device

    single_run = [flag for flag, value in (
        ("--video", args.video), ("--output", args.output), ("--mask-dir", args.mask_dir),
        ("--mask-video", args.mask_video), ("--csv", args.csv), ("--max-frames", args.max_frames),
        ("--realtime", args.realtime), ("--no-display", args.no_display)) if value]
    if single_run:
        verb = "does" if len(single_run) == 1 else "do"
        raise ValueError(f"{', '.join(single_run)} {verb} not apply to --gradio: upload a "
                         "recording in the page's Video tab instead")
    device = resolve_device(args.device)
    threads = args.threads or (default_threads() if device.type == "cpu" else None)
    engine = build_engine(device=device, weights=args.weights, precision=args.precision,
                          cuda_graph=not args.no_cuda_graph, batch=1, threads=threads,
                          runtime=args.runtime)
    if engine.untrained:
        console.print(Panel(f"UNTRAINED WEIGHTS: no {DEFAULT_WEIGHTS} and no --weights; the "
                            "network has random weights and its masks are meaningless.",
                            style="bold red"))
    options = WebOptions(host=args.host, port=args.port, camera=args.camera,
                         max_upload_mb=args.max_upload_mb, smooth=args.smooth,
                         hud=not args.no_hud)
    console.print(f"SLSNet web demo on {engine.name}: open http://{args.host}:{args.port} "
                  "(Ctrl-C stops it)")
    serve(engine, options)
    return 0
