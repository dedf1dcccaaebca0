"""Bounded fuzzing of decode + preprocess: damaged files and odd arrays never crash or hang.

Hypothesis mutates small real video files (flipped, overwritten, inserted, deleted and cut
bytes) and makes frame arrays of every size and layout. Each goes through the real path, the
file source's capture thread and :func:`stream.engines.preprocess.to_input_tensor`, in a separate
worker process, so that a segfault in FFmpeg or OpenCV shows as the worker dying and a hang as
a missed deadline, instead of taking pytest down with it. A file must either open and give
frames (each preprocessed to a finite 1×3×S×S tensor in [-1, 1]) or fail with a
:class:`~stream.errors.StreamError`: one line for the user, never another exception.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from support.media import write_clip
from support.reliability import REPO, demo_env

REQUEST_S = 60.0  # a tiny clip decodes in well under a second; minutes mean a hang
# the suite runs 40 fixed examples; SLSNET_FUZZ_EXAMPLES=2000 explores further, at random
EXAMPLES = int(os.environ.get("SLSNET_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 40, derandomize=not EXAMPLES, deadline=None,
                database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])

WORKER = r"""
import json, sys, threading
import numpy as np
import torch
from stream.errors import StreamError
from stream.engines.preprocess import to_input_tensor
from stream.queues import EOS
from stream.sources import open_source

S = 128

def tensor_ok(x, n=1):
    return (tuple(x.shape) == (n, 3, S, S) and bool(torch.isfinite(x).all())
            and float(x.abs().max()) <= 1.0)

def error(exc):
    if exc is None:
        return None
    return {"type": type(exc).__qualname__, "clean": isinstance(exc, StreamError),
            "message": str(exc)[:300]}

def decode(path):
    try:
        source = open_source(path)
    except Exception as exc:
        return {"opened": False, "error": error(exc)}
    stop = threading.Event()
    source.start(stop)
    frames, bad = 0, []
    while True:
        item = source.queue.get(stop, timeout=30)
        if item is EOS:
            break
        image = item.image
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            bad.append(f"frame {item.index}: {image.dtype} {image.shape}")
        elif not tensor_ok(to_input_tensor([image], S)):
            bad.append(f"frame {item.index}: bad tensor")
        frames += 1
    ended = source.join(10)
    return {"opened": True, "frames": frames, "decoded": source.stats()["decoded"],
            "ended": ended, "bad": bad, "error": error(source.error)}

def preprocess(path, view):
    image = np.load(path)
    views = {"plain": lambda a: a, "flipped": lambda a: a[::-1, ::-1],
             "strided": lambda a: a[::2, ::3], "transposed": lambda a: a.swapaxes(0, 1)}
    image = views[view](image)
    try:
        x = to_input_tensor([image, image], S)
    except Exception as exc:
        return {"error": error(exc)}
    return {"ok": tensor_ok(x, 2)}

print("READY", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if request["kind"] == "file":
        answer = decode(request["path"])
    else:
        answer = preprocess(request["path"], request["view"])
    print(json.dumps(answer), flush=True)
"""


class Worker:
    """The worker process; a crash or a hang is reported as an answer, and it is restarted."""

    def __init__(self, log: Path) -> None:
        self.proc: subprocess.Popen | None = None
        self.log = log  # the worker's stderr, to show what killed it

    def _start(self) -> None:
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True,
                                         env=demo_env(), cwd=REPO)
        assert self._line(300) == "READY", "the fuzz worker did not start"

    def _line(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return self.proc.stdout.readline().strip()

    def ask(self, request: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        start = time.monotonic()
        line = self._line(REQUEST_S)
        if line is None:
            self.close()
            return {"hung": time.monotonic() - start}
        if not line:  # EOF: the worker died (a segfault shows as -11)
            self.proc.wait(10)
            crashed = {"crashed": self.proc.returncode, "log": self.log.read_text()[-2000:]}
            self.proc = None
            return crashed
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(tmp_path_factory.mktemp("worker") / "stderr.txt")
    yield w
    w.close()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Small real files in the containers and codecs a user is likely to bring."""
    folder = tmp_path_factory.mktemp("seeds")
    made = {
        "h264-aac.mp4": write_clip(folder / "a.mp4", frames=6, size_wh=(64, 48), audio=True,
                                   bframes=2),
        "ffv1.mkv": write_clip(folder / "b.mkv", frames=4, size_wh=(33, 17), codec="ffv1"),
        "mjpeg.avi": write_clip(folder / "c.avi", frames=4, size_wh=(64, 48), codec="mjpeg"),
        "mpeg4.ts": write_clip(folder / "d.ts", frames=5, size_wh=(64, 48), codec="mpeg4",
                               container_format="mpegts"),
    }
    return {name: clip.path.read_bytes() for name, clip in made.items()}


MUTATION = st.tuples(
    st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate", "zero"]),
    st.floats(0.0, 1.0),
    st.binary(min_size=1, max_size=48),
)


def mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, where, chunk in mutations:
        at = min(int(where * len(out)), max(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= chunk[0] or 1
        elif kind == "overwrite":
            out[at : at + len(chunk)] = chunk
        elif kind == "insert":
            out[at:at] = chunk
        elif kind == "delete":
            del out[at : at + len(chunk)]
        elif kind == "truncate":
            del out[max(1, at):]
        else:
            out[at : at + 16 * len(chunk)] = bytes(min(16 * len(chunk), len(out) - at))
    return bytes(out)


def assert_survived(answer: dict, what: str) -> None:
    assert "crashed" not in answer, (
        f"{what}: the worker died with code {answer.get('crashed')}:\n{answer.get('log')}")
    assert "hung" not in answer, f"{what}: no answer in {answer['hung']:.0f} s (a hang)"


_names = itertools.count()


@pytest.mark.slow
@pytest.mark.timeout(600)
@FUZZ
@given(seed=st.sampled_from(["h264-aac.mp4", "ffv1.mkv", "mjpeg.avi", "mpeg4.ts"]),
       mutations=st.lists(MUTATION, min_size=1, max_size=5))
def test_damaged_files_open_cleanly_or_fail_with_one_line(worker, seeds, tmp_path, seed,
                                                          mutations):
    path = tmp_path / f"{next(_names)}{Path(seed).suffix}"
    path.write_bytes(mutate(seeds[seed], mutations))
    answer = worker.ask({"kind": "file", "path": str(path)})
    assert_survived(answer, str(mutations))
    event("opened" if answer["opened"] else "refused at open")  # --hypothesis-show-statistics
    if not answer["opened"]:
        assert answer["error"]["clean"], answer["error"]
        assert "\n" not in answer["error"]["message"]
        return
    assert answer["ended"] and answer["bad"] == [], answer
    assert answer["frames"] == answer["decoded"]
    assert answer["error"] is None or answer["error"]["clean"], answer["error"]


@pytest.mark.timeout(300)
@FUZZ
@given(image=hnp.arrays(np.uint8, st.tuples(st.integers(1, 300), st.integers(1, 300),
                                            st.just(3)),
                        elements=st.integers(0, 255)),
       view=st.sampled_from(["plain", "flipped", "strided", "transposed"]))
def test_any_frame_array_preprocesses_to_a_finite_input(worker, tmp_path, image, view):
    path = tmp_path / f"{next(_names)}.npy"
    np.save(path, image)
    answer = worker.ask({"kind": "array", "path": str(path), "view": view})
    assert_survived(answer, f"{image.shape} {view}")
    assert answer.get("ok") is True, answer


@pytest.mark.timeout(300)
@pytest.mark.parametrize("array", [
    np.zeros((0, 10, 3), np.uint8),
    np.zeros((10, 10), np.uint8),
    np.zeros((10, 10, 4), np.uint8),
    np.zeros((10, 10, 3), np.uint16),
    np.full((10, 10, 3), np.nan, np.float32),
], ids=["empty", "grey", "four-channels", "16-bit", "float-nan"])
def test_arrays_outside_the_contract_raise_instead_of_crashing(worker, tmp_path, array):
    path = tmp_path / "odd.npy"
    np.save(path, array)
    answer = worker.ask({"kind": "array", "path": str(path), "view": "plain"})
    assert_survived(answer, str(array.shape))
    assert "error" in answer or answer.get("ok") is True, answer
