"""``python -m stream.bench`` on the CPU: it runs end to end, and its JSON holds real numbers."""

import importlib.util
import json
import subprocess
import sys

import pytest

from stream.bench.measure import Row


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "stream.bench", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_cpu_run_writes_every_section(tmp_path):
    # given / when
    out = tmp_path / "bench.json"
    proc = bench("--device", "cpu", "--quick", "--json", str(out))
    # then
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["quick"] is True
    assert report["command"].startswith("python -m stream.bench --device cpu --quick")
    assert report["env"]["torch"] and report["env"]["torch_threads"] >= 1
    rows = report["rows"]

    def one(section, mode, batch, name=""):
        found = [r for r in rows if r["section"] == section and r["mode"].startswith(mode)
                 and r["batch"] == batch and name in r["name"]]
        assert len(found) == 1, (section, mode, batch, rows)
        return found[0]

    for precision in ("fp32", "bf16"):
        lat = one("model", f"{precision} eager", 1)
        assert 0 < lat["p50_ms"] <= lat["p99_ms"]
        assert one("model", f"{precision} eager", 2)["images_per_s"] > 0
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        from stream.engines.cpu_choice import CANDIDATES

        # the exact engine, the plain form, and every form --runtime auto checks (shipped weights)
        forms = {r["mode"]: r for r in rows if "onnxruntime" in r["mode"]}
        auto = {f"{c.form} onnxruntime (a --runtime auto form)" for c in CANDIDATES}
        assert set(forms) == {"fp32 onnxruntime (the exact engine)",
                              "fp32 onnxruntime, plain attention", *auto}
        assert all(0 < r["p50_ms"] <= r["p99_ms"] and r["batch"] == 1 for r in forms.values())
        # judged against 30 FPS on the form --runtime auto runs here (the note names it; a
        # faster form whose masks failed their check does not count), which the target names
        (note,) = [n for n in report["notes"] if n.startswith("--runtime auto runs cpu ")]
        form = note.removeprefix("--runtime auto runs cpu ").split(" onnxruntime")[0]
        runs = (forms["fp32 onnxruntime (the exact engine)"] if form == "fp32"
                else forms[f"{form} onnxruntime (a --runtime auto form)"])
        (target,) = report["targets"]
        assert target["value"] == round(runs["p50_ms"], 4)
        assert target["target"].endswith(f"the form --runtime auto runs: {runs['mode']}")
        assert target["ok"] == (runs["p50_ms"] <= 1e3 / 30)
    # the engine alone, and the same with --tta's mirror mean
    frame, tta = [r for r in rows if r["name"] == "1920×1080 frame → mask"]
    assert 0 < frame["p50_ms"] <= frame["p99_ms"] and frame["mode"].startswith("cpu fp32")
    assert 0 < tta["p50_ms"] <= tta["p99_ms"]
    assert tta["mode"] == f"{frame['mode']}, mirror mean of 4"
    paced = one("frame path", "cpu fp32", 1, "(pipeline, paced")  # the application's own path
    assert 0 < paced["p50_ms"] <= paced["p99_ms"] and "dropped" in paced["note"]
    flat = one("frame path", "cpu fp32", 1, "(pipeline, flat out)")
    assert flat["images_per_s"] > 0 and flat["note"] == "10 frames"
    plain = one("file", "libx264", None, "plain PyAV")
    app = one("file", "cpu", 1, "app --output")
    assert plain["wall_s"] > 0 and app["wall_s"] > 0
    assert app["note"] == f"{app['wall_s'] / plain['wall_s']:.2f}× plain"  # all frames written
    assert "frame path" in proc.stdout and "slsnet" in proc.stdout  # the table on screen


@pytest.mark.parametrize("args,message", [
    (["--device", "cuda"], "no CUDA GPU"),
    (["--device", "cpu", "--size", "100"], "multiple of 8"),
    (["--device", "cpu", "--only", "model,bogus"], "unknown section"),
    (["--device", "cpu", "--json", "/nonexistent/dir/out.json"], "does not exist"),
    (["--device", "cpu", "--clip-frames", "0"], "at least 1"),
])
def test_user_mistakes_are_one_error_line(args, message, capsys):
    import torch

    from stream.bench.speed import main

    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_gpu_targets_are_checked_against_the_rows():
    from stream.bench.gpu import targets

    rows = [
        Row("model", "slsnet", "fp16 graph", 1, 1.4, 1.6),
        Row("model", "slsnet", "fp16 graph", 512, images_per_s=9000),
        Row("model", "lraspp_mobilenet_v3", "fp16 graph", 1, 0.8, 0.9),
        Row("frame path", "1920×1080 frame → mask (pinned)", "fp16 graph", 1, 1.0, 1.1),
        Row("frame path", "1920×1080 frame → mask (pipeline, paced 60 fps)", "cuda fp16 graph", 1,
            2.0, 2.6),  # the targets judge the application's path, not the engine alone
        Row("file", "plain PyAV decode + encode", "libx264", wall_s=10.0),
        Row("file", "app --output", "cuda fp16 graph", 1, wall_s=13.0),
        Row("file", "app --output", "cuda fp16 graph batch 8", 8, wall_s=12.0),
    ]
    got = {t["target"]: (t["value"], t["ok"]) for t in targets(rows)}
    assert got == {
        "generator fp16 graph b1 p50 ms ≤ 1.5": (1.4, True),
        "generator batched images/s ≥ 10000": (9000, False),
        "generator b1 / LR-ASPP b1 ≤ 2": (1.75, True),
        "1080p frame path p50 ms ≤ 2.5": (2.0, True),
        "1080p frame path p99/p50 ≤ 1.2": (1.3, False),
        "file mode wall / plain decode+encode ≤ 1.25": (1.2, True),
    }
