"""``python demo.py --gradio``: the browser demo (Live webcam, Video upload, Image upload).

One :class:`Runtime` per process holds the engine (the model is loaded once) and the work
folders; every browser tab keeps its own smoothing state in a ``gr.State``. The page is laid out
in :mod:`stream.web.app`; the handlers live in :mod:`stream.web.live` (webcam, server camera)
and :mod:`stream.web.files` (uploads).

    python demo.py --gradio [--host 127.0.0.1] [--port 7860] [--weights W] [--device D]
        [--auth USER:PASSWORD | --auth-file FILE | --no-auth] [--ssl-certfile C --ssl-keyfile K]

Serving beyond this machine needs a login (:mod:`stream.web.access`); each visitor's uploads
and results are its own.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rich.panel import Panel

from stream.assembly import RunConfig, build_engine, untrained_notice
from stream.engines import UNTRAINED_WARNING, Engine
from stream.errors import ConfigError, ServeError
from stream.frame import Frame
from stream.segmenter import Segmenter
from stream.smoothing import DEFAULT_MODE, Identity
from stream.web.access import (
    VisitorGate,
    Visitors,
    check_exposure,
    parse_login,
    read_auth_file,
)
from stream.web.files import JobDirs
from stream.web.live import ServerCamera


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
    logins: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # Gradio's login
    open_warning: str | None = None  # --no-auth beyond this machine: the page's red banner
    ssl_certfile: str | None = None  # TLS: both files, or neither
    ssl_keyfile: str | None = None


class SharedEngine:
    """An :class:`~stream.engines.Engine` shared by many sessions: one call at a time.

    A CUDA graph's buffers belong to one caller at a time, so every call into the network goes
    through one lock. Thresholds are the sessions' own (their segmenters'), not the engine's.

    Args:
        engine: the process's engine.
        lock: the lock every user of ``engine`` shares.
    """

    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self._engine, self._lock = engine, lock
        self.device, self.size, self.name = engine.device, engine.size, engine.name
        self.threshold, self.untrained = engine.threshold, engine.untrained

    def predict(self, frames: list[Frame]) -> None:
        """As :meth:`Engine.predict`, serialised."""
        with self._lock:
            self._engine.predict(frames)

    def infer(self, frames: list[Frame]) -> None:
        """As :meth:`Engine.infer`, serialised."""
        with self._lock:
            self._engine.infer(frames)


class Runtime:
    """What all sessions share: the engine (one model per process), a lock, the job folders.

    Args:
        engine: from :func:`stream.assembly.build_engine`.
        options: the serving options.
    """

    def __init__(self, engine: Engine, options: WebOptions, *, cache: Path | None = None) -> None:
        self.engine = engine
        self.shared = SharedEngine(engine, threading.Lock())  # what every session calls
        self.options = options
        self.cache = cache  # Gradio's cache folder (serve() makes it); results are written in it
        self.jobs = JobDirs(cache / "jobs" if cache is not None else None)
        self.visitors = Visitors(self.jobs.root)
        self.problems: dict[str, str] = {}  # a page's last refusal, for the line that stays
        self.camera = ServerCamera(self, options.camera) if options.camera is not None else None
        self.weights_note = (
            f"{UNTRAINED_WARNING}: no trained weights were found, so the masks are meaningless "
            "(pass --weights PATH)" if engine.untrained else None
        )

    def segment_still(self, frame: Frame, *, threshold: float | None = None) -> None:
        """Fill ``frame.prob`` and ``frame.mask`` of a still photo through the shared engine.

        Args:
            frame: the photo (any size).
            threshold: this session's threshold (None: the network's).
        """
        threshold = self.engine.threshold if threshold is None else float(threshold)
        Segmenter(self.shared, Identity(threshold=threshold)).step([frame])

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
    from starlette.middleware import Middleware  # comes with Gradio

    from stream.web.app import CSS, build_app  # Gradio: imported only when serving

    # Gradio keeps uploads, results and live frames in GRADIO_TEMP_DIR (read when components
    # are built and when the server starts): a private folder per process, removed on exit,
    # leaves nothing behind, not even the temp files of uploads Gradio refused half-way.
    parent = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    Path(parent).mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix="slsnet-web-cache-", dir=parent))
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    runtime = Runtime(engine, options, cache=cache)
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
            auth=list(options.logins) or None,
            auth_message="SLSNet live: log in with the user name and password you were given.",
            ssl_certfile=options.ssl_certfile,
            ssl_keyfile=options.ssl_keyfile,
            ssl_verify=False,  # Gradio's start-up check calls itself; a self-signed cert is fine
            app_kwargs={"middleware": [Middleware(VisitorGate, visitors=runtime.visitors,
                                                  secure=options.ssl_certfile is not None)]},
        )
        if not block:
            return app, runtime
        app.block_thread()  # returns after Ctrl-C, having closed the server
    except KeyboardInterrupt:  # Ctrl-C while the server was still starting
        pass
    except OSError as exc:  # port taken, address not local
        runtime.close()
        raise ServeError(f"cannot serve on {options.host}:{options.port}: {exc}") from None
    finally:
        if block:
            app.close()
            runtime.close()
    return None


def check_tls(certfile: str | None, keyfile: str | None) -> tuple[str | None, str | None]:
    """``--ssl-certfile`` and ``--ssl-keyfile``: both or neither, each a readable file.

    Raises:
        ConfigError: one without the other, or a file that cannot be read.
    """
    if (certfile is None) != (keyfile is None):
        raise ConfigError("TLS needs both --ssl-certfile and --ssl-keyfile")
    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if path is not None and not (Path(path).is_file() and os.access(path, os.R_OK)):
            raise ConfigError(f"{flag} {path}: not a readable file")
    return certfile, keyfile


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_web(args, *, console) -> int:
    """``demo.py --gradio``: build the engine from the parsed flags and serve until Ctrl-C.

    Raises:
        ConfigError: a flag that only applies to a single run (``--video``, ``--output``, …).
    """
    single_run = [flag for flag, value in (
        ("--video", args.video), ("--output", args.output), ("--mask-dir", args.mask_dir),
        ("--mask-video", args.mask_video), ("--csv", args.csv), ("--max-frames", args.max_frames),
        ("--realtime", args.realtime), ("--no-display", args.no_display)) if value]
    if single_run:
        verb = "does" if len(single_run) == 1 else "do"
        raise ConfigError(f"{', '.join(single_run)} {verb} not apply to --gradio: upload a "
                          "recording in the page's Video tab instead")
    logins = [parse_login(text) for text in args.auth or ()]
    if args.auth_file:
        logins += read_auth_file(args.auth_file)
    open_warning = check_exposure(args.host, logins, args.no_auth)
    tls = check_tls(args.ssl_certfile, args.ssl_keyfile)
    config = dataclasses.replace(RunConfig.from_args(args), batch=1)
    engine = build_engine(config, progress=console.print)
    if getattr(engine, "choice", None):
        console.print(f"runtime auto: {engine.name} ({engine.choice})")
    notice = untrained_notice(engine)
    if notice is not None:
        console.print(Panel(notice, style="bold red"))
    options = WebOptions(host=args.host, port=args.port, camera=args.camera,
                         max_upload_mb=args.max_upload_mb, smooth=args.smooth,
                         hud=not args.no_hud, logins=tuple(logins), open_warning=open_warning,
                         ssl_certfile=tls[0], ssl_keyfile=tls[1])
    if open_warning:
        console.print(f"[bold red]warning:[/] {open_warning}")
    scheme = "https" if tls[0] else "http"
    login = f", {len(logins)} login(s)" if logins else ""
    console.print(f"SLSNet web demo on {engine.name}: open {scheme}://{args.host}:{args.port}"
                  f"{login} (Ctrl-C stops it)")
    serve(engine, options)
    return 0
