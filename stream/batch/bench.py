"""``python -m stream.batch.bench DIR``: recordings per minute, batch modes against a plain loop.

Over the same recordings and in one run: a loop of ``demo.py --video F --mask-dir ...`` (one
process per recording, as a script over a folder would do it), then ``python -m stream.batch``
with ``--address none`` and 1 worker, ``none`` with 2 workers, and ``local`` Ray with 2 (when
Ray is installed), each into a fresh output folder and timed from the command's start to its
end (interpreter and engine start included: they are what a user waits for). Every mode writes
the same outputs (mask PNGs) with one thread per recording, from the first ``--max-frames``
frames of each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stream.batch.plan import PATTERN, find_recordings
from stream.batch.runners import ROOT

MODES = {
    "none, 1 worker": ["--address", "none", "--workers", "1"],
    "none, 2 workers": ["--address", "none", "--workers", "2"],
    "local Ray, 2 workers": ["--address", "local", "--workers", "2"],
}


def _env() -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0"}


def _timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[:4])} ... failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Measure and print a table: mode, seconds, recordings per minute."""
    parser = argparse.ArgumentParser(prog="python -m stream.batch.bench", description=__doc__)
    parser.add_argument("input", help="a folder of recordings")
    parser.add_argument("--pattern", default=PATTERN)
    parser.add_argument("--runtime", default="torch", help="CPU runtime for every mode")
    parser.add_argument("--max-frames", type=int, default=30, help="frames per recording")
    args = parser.parse_args(argv)
    recordings = find_recordings([args.input], args.pattern)
    if not recordings:
        raise SystemExit(f"error: no recordings matching {args.pattern} in {args.input}")
    try:
        import ray  # noqa: F401
    except ImportError:
        MODES.pop("local Ray, 2 workers")
    common = ["--threads", "1", "--runtime", args.runtime, "--max-frames", str(args.max_frames)]
    times = {}
    with tempfile.TemporaryDirectory(prefix="batch-bench") as tmp:
        t = 0.0
        (Path(tmp) / "loop").mkdir()
        for rec in recordings:
            out = Path(tmp) / "loop" / rec.key
            t += _timed([sys.executable, str(ROOT / "demo.py"), "--video", rec.path,
                         "--no-display", "--mask-dir", str(out), *common])
        times["loop of demo.py --video"] = t
        for name, flags in MODES.items():
            times[name] = _timed([sys.executable, "-m", "stream.batch", args.input,
                                  "--pattern", args.pattern, "--out", str(Path(tmp) / name),
                                  "--outputs", "masks", "--cpus-per-recording", "1",
                                  "--runtime", args.runtime, "--max-frames",
                                  str(args.max_frames), *flags])
    n = len(recordings)
    print(f"{n} recordings, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'mode':<26} {'seconds':>8} {'recordings/min':>15}")
    for name, seconds in times.items():
        print(f"{name:<26} {seconds:>8.1f} {60 * n / seconds:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
