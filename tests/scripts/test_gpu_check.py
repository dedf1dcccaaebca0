"""The GPU check script's dry run, on the CPU: which steps and test files a lent GPU would run."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dry_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/gpu_check.sh", "dry-run"], cwd=ROOT, text=True,
                          capture_output=True, timeout=60,
                          env={**os.environ, "OUT": str(tmp_path), **env})


def test_dry_run_lists_only_the_gpu_test_files_and_the_benchmark(tmp_path):
    # when
    proc = dry_run(tmp_path)
    # then: tests and bench by default, in that order, and nothing ran
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert lines[0].startswith("== pytest -m cuda") and lines[1].startswith("== stream.bench")
    files = [w for w in lines[0].split() if w.endswith(".py")]
    assert files, lines[0]
    for name in files:  # every file it picks holds a cuda test, and every such file is picked
        assert "mark.cuda" in (ROOT / name).read_text(), name
    holding = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
               if "mark.cuda" in p.read_text()}
    assert set(files) == holding
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert summary and all(line.startswith("== ") for line in summary)  # the plan; nothing ran


def test_unknown_step_is_an_error(tmp_path):
    proc = dry_run(tmp_path, STEPS="tests fly")
    assert proc.returncode == 2 and "unknown step 'fly'" in proc.stderr


def gpu_train(out: Path, *flags: str) -> subprocess.CompletedProcess:
    """scripts/gpu_train.py with a 400 s budget writing into ``out``, and ``flags``."""
    return subprocess.run([sys.executable, "scripts/gpu_train.py", "--data", "unused", "--out",
                           str(out), "--seconds", "400", *flags], cwd=ROOT, text=True,
                          capture_output=True, timeout=60)


def dry_plan(out: Path, *flags: str) -> dict:
    """The plan a dry run of scripts/gpu_train.py writes (no GPU, no data)."""
    proc = gpu_train(out, "--dry-run", *flags)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "plan.json").read_text())


def test_training_plan_fills_the_budget_without_a_gpu(tmp_path):
    plan = dry_plan(tmp_path, "--beside", "comparisons")
    phases = [p.split(":") for p in plan["main"].split(",")]
    assert [(size, kind) for size, _, kind in phases] == [
        ("64", "sup"), ("128", "sup"), ("128", "gan")]
    assert all(int(epochs) >= 1 for _, epochs, _ in phases)
    assert 0 < plan["comparisons_gpu_s"] < plan["budget_s"]


def test_fine_tuning_plan_continues_from_weights_at_128(tmp_path):
    plan = dry_plan(tmp_path, "--init", "weights/x.pt")
    phases = [p.split(":") for p in plan["finetune"].split(",")]
    assert [(size, kind) for size, _, kind in phases] == [("128", "sup"), ("128", "gan")]
    sup, gan = (int(epochs) for _, epochs, _ in phases)
    assert sup > gan >= 1 and plan["init"] == "weights/x.pt" and "main" not in plan


def test_fine_tuning_needs_weights_that_exist(tmp_path):
    proc = gpu_train(tmp_path, "--init", "no/such.pt")
    assert proc.returncode == 2 and "no/such.pt: no such file" in proc.stderr


def test_by_default_the_main_recipe_runs_with_its_variants_on_one_schedule(tmp_path):
    plan = dry_plan(tmp_path / "default")
    alone = dry_plan(tmp_path / "comparisons", "--beside", "comparisons")
    assert plan["beside"] == ["main_colour", "main_seed1"] and "comparisons_gpu_s" not in plan
    epochs = [int(p.split(":")[1]) for p in plan["main"].split(",")]
    alone_epochs = [int(p.split(":")[1]) for p in alone["main"].split(",")]
    # three runs share the GPU: each plans fewer epochs than the main run beside small ones
    assert all(1 <= e <= a for e, a in zip(epochs, alone_epochs, strict=True))
    assert sum(epochs) < sum(alone_epochs)
