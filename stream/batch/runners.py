"""Where recordings run: this process, N worker processes, or Ray actors; one dispatcher for all.

Each *slot* holds one :class:`~stream.batch.work.Worker` (one engine) and takes one recording at
a time: :class:`InlineSlot` (this process), :class:`ProcessSlot` (a spawned process of its own
session, so Ctrl-C reaches only this one, which stops the others) and :class:`RaySlot` (an
actor with its CPU and GPU share). :func:`dispatch` hands recordings to free slots; a slot
whose worker died is restarted and the recording retried up to ``retries`` times, then it is a
``failed`` row. Ray is imported only by :func:`connect_ray`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from multiprocessing.connection import wait as wait_ready
from pathlib import Path

from stream.batch.plan import Options, Recording
from stream.batch.work import Worker, record_failure
from stream.errors import ConfigError

POLL_S = 0.5  # how often the dispatcher looks up from waiting (Ctrl-C, progress)
STOP_S = 10.0  # how long a worker process may take to end when asked
INSTALL = 'pip install ".[batch]"'
ROOT = Path(__file__).resolve().parents[2]  # the checkout, for Ray's workers' imports


class WorkerDied(RuntimeError):
    """The worker holding a recording ended without a result (killed, out of memory)."""


class InlineSlot:
    """Runs recordings in this process, one at a time."""

    def __init__(self, out: Path, options: Options) -> None:
        self.worker = Worker(out, options)

    def submit(self, recording: Recording, attempt: int) -> Future:
        """Process ``recording`` now; the returned future is done."""
        future: Future = Future()
        future.set_result(self.worker.process(recording, attempt))
        return future

    def restart(self) -> None:
        """Nothing to restart: a death here is the whole run's."""

    def close(self) -> None:
        """Nothing to release."""


def _serve(conn, out: Path, options: Options) -> None:
    """A worker process: recordings in, results out, until told to stop."""
    os.setsid()  # the terminal's Ctrl-C goes to the dispatcher, which ends this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(out, options)
    while True:
        job = conn.recv()
        if job is None:
            return
        conn.send(worker.process(*job))


class ProcessSlot:
    """Runs recordings in a worker process of its own (spawned: no inherited threads)."""

    def __init__(self, out: Path, options: Options) -> None:
        self._args = (out, options)
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, *self._args), daemon=True)
        self._proc.start()
        child.close()

    def submit(self, recording: Recording, attempt: int) -> Future:
        """Send ``recording`` to the worker; the future holds its result or :class:`WorkerDied`."""
        future: Future = Future()
        conn, proc = self._conn, self._proc

        def wait_reply() -> None:
            ready = wait_ready([conn, proc.sentinel])
            try:
                if conn in ready or conn.poll():
                    future.set_result(conn.recv())
                    return
            except (EOFError, OSError):
                pass
            proc.join(STOP_S)
            future.set_exception(WorkerDied(f"worker process ended with status {proc.exitcode}"))

        try:
            conn.send((recording, attempt))
        except OSError as exc:
            future.set_exception(WorkerDied(f"worker process gone ({exc})"))
            return future
        threading.Thread(target=wait_reply, name=f"batch {recording.key}", daemon=True).start()
        return future

    def restart(self) -> None:
        """Replace a dead worker process with a fresh one."""
        self.close()
        self._start()

    def close(self) -> None:
        """Ask the worker to stop; end it if it does not (Ctrl-C: it is mid-recording)."""
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._proc.join(0.5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(STOP_S)
        self._conn.close()


def check_address(address: str) -> None:
    """Refuse a malformed ``--address``, or a ``HOST:PORT`` where nothing listens.

    Ray itself would retry an unreachable address for ever, logging every few seconds.

    Raises:
        ConfigError: with one line saying which.
    """
    if address in ("none", "local", "auto") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected none, local, auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: "
                          f"{exc.strerror or exc}") from None


def ray_runtime_env() -> dict:
    """What Ray's workers need to import this package from a checkout, without telemetry."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}}


def connect_ray(address: str, *, num_cpus: int | None = None):
    """Ray, connected: a private instance (``local``) or an existing cluster.

    Telemetry and the dashboard are off unless the cluster was started with them. A private
    Ray's workers import this checkout; a cluster's nodes need the package installed (or a Ray
    Job's ``--working-dir``).

    Returns:
        (ray, started): ``started`` is True when this call started Ray (the caller shuts it down).

    Raises:
        ConfigError: Ray is not installed, or the cluster cannot be reached.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--address {address} needs Ray, which is not installed: {INSTALL} "
                          "(or --address none to run on this machine without it)") from None
    if ray.is_initialized():
        return ray, False
    try:
        if address == "local":
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     runtime_env=ray_runtime_env(), log_to_driver=False, logging_level="error")
        else:  # the nodes import the package as installed there (or a Ray Job's working_dir)
            ray.init(address=address, log_to_driver=False, logging_level="error")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: "
                          f"{' '.join(str(exc).split())}") from None
    return ray, True


class RaySlot:
    """Runs recordings in a Ray actor that holds ``cpus`` CPUs and ``gpus`` GPUs."""

    def __init__(self, ray, out: Path, options: Options, *, cpus: float, gpus: float) -> None:
        self._ray = ray
        self._cls = ray.remote(Worker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0,
                                               max_task_retries=0)
        self._args = (str(out), options)
        self._actor = self._cls.remote(*self._args)

    def submit(self, recording: Recording, attempt: int) -> Future:
        """Send ``recording`` to the actor; the future holds its result or :class:`WorkerDied`."""
        future: Future = Future()
        ray_future = self._actor.process.remote(recording, attempt).future()

        def settle(done: Future) -> None:
            try:
                future.set_result(done.result())
            except self._ray.exceptions.RayActorError as exc:
                future.set_exception(WorkerDied(f"Ray actor died: {type(exc).__name__}"))
            except Exception as exc:  # the task itself raised: a bug, not a dead worker
                future.set_exception(exc)

        ray_future.add_done_callback(settle)
        return future

    def restart(self) -> None:
        """Replace a dead actor with a fresh one."""
        self.close()
        self._actor = self._cls.remote(*self._args)

    def close(self) -> None:
        """End the actor (Ctrl-C: whatever it was doing is abandoned, never moved into OUT)."""
        self._ray.kill(self._actor, no_restart=True)


def dispatch(slots: Sequence, recordings: Sequence[Recording], *, out: Path, options: Options,
             retries: int, on_result: Callable[[dict], None]) -> list[dict]:
    """Run every recording on the first free slot; returns the results in finishing order.

    A worker's death costs its recording one attempt (``retries`` more are allowed); results are
    passed to ``on_result`` as they come. Every slot is closed on return and on Ctrl-C, which
    cancels what is queued and abandons what runs (its staging folder is not moved into OUT).
    """
    queue = deque((rec, 0) for rec in recordings)
    running: dict[Future, tuple] = {}
    idle = list(slots)
    results: list[dict] = []
    try:
        while queue or running:
            while queue and idle:
                slot = idle.pop()
                rec, attempt = queue.popleft()
                running[slot.submit(rec, attempt)] = (slot, rec, attempt)
            done, _ = wait(list(running), timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                slot, rec, attempt = running.pop(future)
                try:
                    result = future.result()
                except WorkerDied as exc:
                    slot.restart()
                    if attempt < retries:
                        queue.appendleft((rec, attempt + 1))
                        idle.append(slot)
                        continue
                    result = record_failure(out, rec, options, f"{exc} ({attempt + 1} attempts)",
                                            attempts=attempt + 1)
                idle.append(slot)
                results.append(result)
                on_result(result)
    finally:
        for slot in slots:
            slot.close()
    return results
