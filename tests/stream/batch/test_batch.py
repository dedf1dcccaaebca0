"""python -m stream.batch with --address none: keys, resume, --force, a bad file, a crash, workers.

Real clips (PyAV), the shipped weights, one thread per recording; every recording is a few
frames, so each run costs the engine's start and little more.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.media import write_clip, write_text_as_video

from stream.batch import find_recordings, key_for
from stream.batch.cli import CRASH_ENV, main
from stream.batch.work import CRASH_EXIT

ROOT = Path(__file__).resolve().parents[3]
FRAMES = 6
FAST = ("--cpus-per-recording", "1", "--runtime", "torch")


def library(root: Path, *, bad: bool = False) -> Path:
    """Three tiny clips (one in a sub-folder), and a text file named .mp4 when ``bad``."""
    lib = root / "lib"
    (lib / "visit").mkdir(parents=True)
    write_clip(lib / "a.mp4", frames=FRAMES)
    write_clip(lib / "visit" / "b.mp4", frames=FRAMES + 2)
    write_clip(lib / "c.mp4", frames=FRAMES - 1)
    if bad:
        write_text_as_video(lib / "broken.mp4")
    return lib


def result(out: Path, key: str) -> dict:
    return json.loads((out / key / "result.json").read_text())


def summary_rows(out: Path) -> dict[str, dict]:
    import csv

    with open(out / "summary.csv", newline="") as f:
        return {r["key"]: r for r in csv.DictReader(f)}


def run_module(*args: str, env: dict | None = None, timeout: float = 240):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "stream.batch", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_keys_come_from_paths_relative_to_each_input(tmp_path):
    # given: nested folders, a file named directly and a glob
    lib = library(tmp_path)
    (lib / "visit" / "notes.txt").write_text("not a clip")
    # when
    from_folder = [r.key for r in find_recordings([str(lib)])]
    from_glob = [r.key for r in find_recordings([str(lib / "*" / "*.mp4")])]
    from_file = [r.key for r in find_recordings([str(lib / "visit" / "b.mp4")])]
    # then
    assert from_folder == ["a", "c", "visit__b"]
    assert from_glob == ["visit__b"]
    assert from_file == ["b"]
    assert key_for(Path("2026 01/scan #3.mov")) == "2026_01__scan__3"


def test_two_recordings_with_one_key_are_refused_before_anything_runs(tmp_path, capsys):
    # given: a.mp4 at the top of two inputs
    first = library(tmp_path)
    second = tmp_path / "second"
    second.mkdir()
    write_clip(second / "a.mp4", frames=3)
    out = tmp_path / "out"
    # when
    status = main([str(first), str(second), "--out", str(out)])
    # then
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("error: two recordings have the key 'a'") and "Traceback" not in err
    assert not out.exists()


def test_a_bad_file_fails_alone_and_reruns_skip_force_and_changes_redo(tmp_path, capsys):
    # given
    lib = library(tmp_path, bad=True)
    out = tmp_path / "out"
    args = [str(lib), "--out", str(out), "--outputs", "masks,csv", *FAST]
    # when: the first run
    status = main(args)
    # then: three recordings done, the broken one a failed row with its reason, exit 1
    assert status == 1
    rows = summary_rows(out)
    assert sorted(rows) == ["a", "broken", "c", "visit__b"]
    assert {k: r["status"] for k, r in rows.items()} == {
        "a": "ok", "broken": "failed", "c": "ok", "visit__b": "ok"}
    assert "not a video file" in rows["broken"]["reason"]
    assert [rows[k]["frames_out"] for k in ("a", "c", "visit__b")] == ["6", "5", "8"]
    assert len(list((out / "visit__b" / "masks").glob("*.png"))) == FRAMES + 2
    assert not list((out / ".staging").glob("*"))
    report = (out / "report.html").read_text()
    assert report.count("data:image/jpeg;base64,") == 3 and report.count("<svg") == 3
    first = {k: result(out, k) for k in ("a", "c", "visit__b")}
    # when: a rerun, after the broken file is replaced and c changes
    (lib / "broken.mp4").unlink()
    write_clip(lib / "c.mp4", frames=FRAMES + 1)
    capsys.readouterr()
    assert main(args) == 0
    # then: only c is redone, and the summary still lists every recording
    assert "3 recordings: 2 done already, 1 to do" in capsys.readouterr().err
    assert result(out, "a") == first["a"] and result(out, "visit__b") == first["visit__b"]
    assert result(out, "c")["frames_out"] == FRAMES + 1
    assert sorted(summary_rows(out)) == ["a", "broken", "c", "visit__b"]
    # when: --force
    assert main([*args, "--force"]) == 0
    # then: all three redone
    assert "0 done already, 3 to do" in capsys.readouterr().err
    # when: other options
    assert main([*args, "--smooth", "off"]) == 0
    # then: a finished result made with other options is not taken as done
    assert "0 done already, 3 to do" in capsys.readouterr().err
    assert result(out, "a")["options"]["smooth"] == "off"
    # when: the same with --tta
    assert main([*args, "--smooth", "off", "--tta"]) == 0
    # then: redone with the mirror mean, which the result records
    assert "0 done already, 3 to do" in capsys.readouterr().err
    assert result(out, "a")["options"]["tta"] is True


def test_a_crash_leaves_no_half_output_and_the_next_run_finishes(tmp_path):
    # given
    lib = library(tmp_path)
    out = tmp_path / "out"
    args = [str(lib), "--out", str(out), "--outputs", "video,masks", *FAST]
    # when: the process dies at frame 3 of c (after a finished)
    crashed = run_module(*args, env={CRASH_ENV: "c@3"})
    # then: a is complete, c is only in the staging area
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    assert result(out, "a")["status"] == "ok"
    assert not (out / "c").exists()
    assert [p.name.split(".")[0] for p in (out / ".staging").iterdir()] == ["c"]
    # when: run again
    resumed = run_module(*args)
    # then: the staging area is emptied, a is skipped, c and visit__b are done
    assert resumed.returncode == 0, resumed.stderr
    assert "3 recordings: 1 done already, 2 to do" in resumed.stderr
    assert not (out / ".staging").exists()
    assert result(out, "c")["frames_out"] == FRAMES - 1
    assert len(list((out / "c" / "masks").glob("*.png"))) == FRAMES - 1


def test_worker_processes_retry_a_killed_worker(tmp_path, monkeypatch):
    # given: two worker processes; the one that takes a dies at its frame 2, once
    lib = library(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setenv(CRASH_ENV, "a@2")
    # when
    status = main([str(lib), "--out", str(out), "--outputs", "masks", "--workers", "2", *FAST])
    # then: a retried once, one complete output for each
    assert status == 0
    assert result(out, "a")["attempts"] == 2
    assert [result(out, k)["attempts"] for k in ("c", "visit__b")] == [1, 1]
    assert len(list((out / "a" / "masks").glob("*.png"))) == FRAMES
    assert not (out / ".staging").exists()


def test_retries_run_out_into_a_failed_row(tmp_path, monkeypatch):
    # given: no retries allowed
    lib = tmp_path / "lib"
    lib.mkdir()
    write_clip(lib / "a.mp4", frames=4)
    write_clip(lib / "b.mp4", frames=4)
    out = tmp_path / "out"
    monkeypatch.setenv(CRASH_ENV, "a@1")
    # when
    status = main([str(lib), "--out", str(out), "--outputs", "csv", "--workers", "2",
                   "--retries", "0", *FAST])
    # then
    assert status == 1
    assert result(out, "a")["status"] == "failed"
    assert "worker process ended" in result(out, "a")["reason"]
    assert result(out, "b")["status"] == "ok"


@pytest.mark.parametrize("flags, message", [
    (["--address", "none", "--gpus-per-recording", "1"], "--gpus-per-recording is for Ray"),
    (["--outputs", "video,gif"], "unknown output gif"),
    (["--weights", "missing.pt"], "weights missing.pt: no such file"),
    (["--address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["--address", "nowhere"], "expected none, local, auto or HOST:PORT"),
])
def test_bad_flags_are_one_line(tmp_path, flags, message):
    write_clip(tmp_path / "a.mp4", frames=2)
    done = run_module(str(tmp_path / "a.mp4"), "--out", str(tmp_path / "out"), *flags)
    assert done.returncode in (1, 2)
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_abandons_what_runs_and_the_next_run_redoes_it(tmp_path, workers):
    # given: a run busy with long recordings
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("a", "b", "c"):
        write_clip(lib / f"{name}.mp4", frames=150)
    out = tmp_path / "out"
    args = [str(lib), "--out", str(out), "--outputs", "masks", "--workers", workers, *FAST]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stream.batch", *args], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / ".staging").glob("*/masks/*.png")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        # when
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    # then: nothing half-written in OUT, the report written, exit 130
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not any((out / key).exists() for key in ("a", "b", "c"))
    assert (out / "summary.csv").is_file() and not (out / ".staging").exists()
    # when: run again
    again = run_module(*args, "--max-frames", "3")
    # then
    assert again.returncode == 0, again.stderr
    assert all(result(out, k)["status"] == "ok" for k in ("a", "b", "c"))
