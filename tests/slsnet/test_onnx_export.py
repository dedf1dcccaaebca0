"""ONNX export: both attention forms are PAM's exact attention, on a copy; the pooled
approximation; the export command."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.nets import open_gates

from slsnet import build_generator
from slsnet.blocks import PAM, pam_reference, plain_attention
from slsnet.onnx_export import (
    ATTENTIONS,
    OrtAttention,
    export_copy,
    export_onnx,
    largest_maps,
    weights_digest,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "weights" / "slsnet_isic2017.pt"


def open_pam(seed: int) -> PAM:
    """A 32-channel PAM in eval mode with seeded weights and its gate wide open (η 1)."""
    torch.manual_seed(seed)  # also seeds the inputs the test draws next
    pam = PAM(32).eval()
    pam.eta.data.fill_(1.0)
    return pam


@pytest.mark.parametrize("attention", [plain_attention, OrtAttention.apply])
def test_export_forms_of_pam_are_the_same_attention(attention):
    # given a PAM with an open gate
    pam = open_pam(seed=0)
    x = torch.randn(2, 32, 8, 8)
    # when
    with torch.inference_mode():
        fused = pam(x)
        pam.attention = attention
        other = pam(x)
        reference = pam_reference(pam, x)
    # then: the same numbers (scale 1, no padding)
    torch.testing.assert_close(other, fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", sorted(ATTENTIONS))
def test_export_copy_changes_only_the_copy(attention):
    generator = build_generator().eval()
    copy = export_copy(generator, attention)
    assert all(m.attention is ATTENTIONS[attention] for m in copy.modules() if isinstance(m, PAM))
    assert all(m.attention is None for m in generator.modules() if isinstance(m, PAM))
    assert weights_digest(copy) == weights_digest(generator)
    with pytest.raises(ValueError, match="attention must be one of"):
        export_copy(generator, "flash")


@pytest.fixture(scope="module")
def models():
    generator = open_gates(seed=3)
    return generator, {a: export_onnx(generator, attention=a) for a in sorted(ATTENTIONS)}


@pytest.mark.parametrize(("attention", "fused_nodes"), [("ort", 6), ("plain", 0)])
def test_exported_graph_form_and_numbers(models, attention, fused_nodes):
    # given the same random weights exported in both forms
    generator, exported = models
    model = onnx.load_from_string(exported[attention])
    # then "ort" has one fused attention node per PAM (6), "plain" only standard operators
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    assert ops.count(("com.microsoft", "MultiHeadAttention")) == fused_nodes
    assert all(domain in ("", "ai.onnx") for domain, _ in ops) == (fused_nodes == 0)
    onnx.checker.check_model(model)
    # and ONNX Runtime gives torch's probabilities (dynamic batch and size)
    session = ort.InferenceSession(exported[attention], providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        expected = generator(x).numpy()
    (got,) = session.run(None, {"x": x.numpy()})
    assert got.shape == (2, 1, 64, 64)
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("pool", [2, 4])
def test_pooled_pam_attends_to_keys_and_values_averaged_over_cells(pool):
    # given a PAM with an open gate, and the attention written out over averaged cells
    pam = open_pam(seed=1)
    x = torch.randn(2, 32, 16, 8)
    with torch.inference_mode():
        q = pam.query(x).flatten(2).transpose(1, 2)
        k = torch.nn.functional.avg_pool2d(pam.key(x), pool).flatten(2).transpose(1, 2)
        v = torch.nn.functional.avg_pool2d(pam.value(x), pool).flatten(2).transpose(1, 2)
        expected = plain_attention(q, k, v).transpose(1, 2).reshape(x.shape) + x
        # when the module pools, on the fused path and on the export path
        pam.pool = pool
        fused = pam(x)
        pam.attention = plain_attention
        written = pam(x)
    # then both are that attention, pool² times fewer keys than queries
    assert k.shape[1] * pool * pool == q.shape[1]
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(written, expected, atol=1e-5, rtol=1e-5)


def test_pooled_export_pools_only_the_largest_maps_of_a_copy(models):
    # given the generator (its PAMs attend over maps of 1/2, 1/4 and 1/8 of the input)
    generator, exported = models
    # when
    pooled = export_copy(generator, "ort", pool=2)
    # then the copy pools the two PAMs at 1/2 (down1's and up2's), the original none
    names = {m: n for n, m in pooled.named_modules()}
    assert sorted(names[m] for m in largest_maps(pooled)) == ["down1.1", "up2.3"]
    assert sorted(names[m] for m in pooled.modules() if getattr(m, "pool", 1) == 2) == [
        "down1.1", "up2.3"]
    assert all(m.pool == 1 for m in generator.modules() if isinstance(m, PAM))
    with pytest.raises(ValueError, match="pool must be one of"):
        export_copy(generator, "ort", pool=3)
    # and ONNX Runtime runs the pooled graph as torch runs the pooled copy, at any batch and size
    model = export_onnx(generator, pool=2)
    ops = [n.op_type for n in onnx.load_from_string(model).graph.node]
    assert ops.count("AveragePool") == 4  # keys and values of two PAMs
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    with torch.inference_mode():
        expected = pooled(x).numpy()
    (got,) = session.run(None, {"x": x.numpy()})
    assert np.abs(got - expected).max() < 1e-4


def export(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slsnet.onnx_export", *args], cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_export_command_writes_a_model_that_runs(tmp_path):
    if not WEIGHTS.is_file():
        pytest.skip("no shipped weights")
    # when
    out = tmp_path / "slsnet.onnx"
    proc = export("--weights", str(WEIGHTS), "--out", str(out), "--attention", "plain",
                  "--pool", "2", cwd=tmp_path)
    # then
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"wrote {out} (") and "attention plain" in proc.stdout
    assert "keys pooled 2×2 in the largest maps" in proc.stdout
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("AveragePool") == 4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (prob,) = session.run(None, {"x": np.zeros((1, 3, 128, 128), np.float32)})
    assert prob.shape == (1, 1, 128, 128) and 0 <= prob.min() <= prob.max() <= 1
    assert [p.name for p in tmp_path.iterdir()] == ["slsnet.onnx"]  # no temp file left


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "missing/x.onnx"], "error: no such folder: missing"),
    (["--weights", "nope.pt", "--out", "x.onnx"], "error: "),
])
def test_export_command_mistakes_are_one_error_line(tmp_path, args, message):
    proc = export(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written
