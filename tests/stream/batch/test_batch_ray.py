"""python -m stream.batch on Ray: a session-wide local Ray (2 CPUs), and a real loopback cluster.

Skipped where Ray is not installed (``pip install ".[batch]"``; the ``dev`` extra has it).
"""

import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support.media import write_clip

from stream.batch.cli import CRASH_ENV, main
from stream.batch.runners import ray_runtime_env

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[3]
FRAMES = 5
SAME = ("--cpus-per-recording", "1", "--runtime", "torch", "--outputs",
        "video,masks,mask-video,csv")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def local_ray():
    """One private Ray for the session: 2 CPUs, a small object store, a short temp path."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False,
             _temp_dir=temp, runtime_env=ray_runtime_env(), log_to_driver=False,
             logging_level="error")
    yield ray
    ray.shutdown()


def library(root: Path) -> Path:
    lib = root / "lib"
    (lib / "visit").mkdir(parents=True)
    write_clip(lib / "a.mp4", frames=FRAMES)
    write_clip(lib / "visit" / "b.mp4", frames=FRAMES + 1)
    write_clip(lib / "c.mp4", frames=FRAMES - 1)
    return lib


def files(out: Path) -> dict[str, Path]:
    """Every output file under OUT's recording folders, by relative path (not the reports)."""
    return {str(p.relative_to(out)): p for p in sorted(out.glob("*/**/*"))
            if p.is_file() and p.name != "result.json" and not p.name.endswith(".csv")}


def csv_without_timings(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("ms_")}
                for r in csv.DictReader(f)]


def test_ray_outputs_equal_none_outputs_and_reruns_skip(tmp_path, local_ray, capsys):
    # given
    lib = library(tmp_path)
    none_out, ray_out = tmp_path / "none", tmp_path / "ray"
    # when
    assert main([str(lib), "--out", str(none_out), *SAME]) == 0
    assert main([str(lib), "--out", str(ray_out), "--address", "local", *SAME]) == 0
    # then: the same files, byte for byte (the per-frame CSV up to its stage timings)
    got, want = files(ray_out), files(none_out)
    assert sorted(got) == sorted(want) and len(want) == 3 * 3 + 3 * FRAMES
    for name, path in want.items():
        assert got[name].read_bytes() == path.read_bytes(), name
    for key in ("a", "c", "visit__b"):
        assert (csv_without_timings(ray_out / key / "frames.csv")
                == csv_without_timings(none_out / key / "frames.csv"))
    # when: again on Ray, then with --force
    capsys.readouterr()
    assert main([str(lib), "--out", str(ray_out), "--address", "local", *SAME]) == 0
    assert "3 recordings: 3 done already, 0 to do" in capsys.readouterr().err
    assert main([str(lib), "--out", str(ray_out), "--address", "local", "--force", *SAME]) == 0
    assert "0 done already, 3 to do" in capsys.readouterr().err


def test_a_killed_ray_actor_is_retried(tmp_path, local_ray, monkeypatch):
    # given: the actor that takes c dies at its frame 1, once
    lib = library(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setenv(CRASH_ENV, "c@1")
    # when
    status = main([str(lib), "--out", str(out), "--address", "local", "--cpus-per-recording",
                   "1", "--runtime", "torch", "--outputs", "masks"])
    # then
    assert status == 0
    import json

    result = json.loads((out / "c" / "result.json").read_text())
    assert result["status"] == "ok" and result["attempts"] == 2
    assert len(list((out / "c" / "masks").glob("*.png"))) == FRAMES - 1
    assert not (out / ".staging").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_cluster_on_loopback(tmp_path):
    # given: a head node started as an operator would (its own process group, stopped below)
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
         "--disable-usage-stats", "--temp-dir", temp],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, "ray start --head ended"
                assert time.monotonic() < deadline, "the head node did not come up"
                time.sleep(1)
        lib = library(tmp_path)
        out = tmp_path / "out"
        # when
        done = subprocess.run(
            [sys.executable, "-m", "stream.batch", str(lib), "--out", str(out), "--address",
             f"127.0.0.1:{port}", "--cpus-per-recording", "1", "--runtime", "torch",
             "--outputs", "masks"], env=env, capture_output=True, text=True, timeout=300)
        # then
        assert done.returncode == 0, done.stderr
        assert "3 recordings: 0 done already, 3 to do" in done.stderr
        assert [len(list((out / k / "masks").glob("*.png"))) for k in ("a", "c", "visit__b")] \
            == [FRAMES, FRAMES - 1, FRAMES + 1]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
