"""ONNX Runtime engine: exact export, same masks as the torch engine, the model cache, the CLI."""

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support.isic_runs import ISIC
from support.media import write_clip
from support.nets import open_gates

from slsnet import build_generator
from slsnet.checkpoint import load_generator
from stream.cli import main
from stream.engines import CpuEngine, EngineError, build_engine
from stream.frame import Frame

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from stream.engines.onnx_runtime import KEEP, OnnxEngine  # noqa: E402  (after the importorskip)

ROOT = Path(__file__).resolve().parents[3]
WEIGHTS = ROOT / "weights" / "slsnet_isic2017.pt"
VAL = ISIC / "val" / "images"
CPU = torch.device("cpu")


def val_frames(count: int = 4) -> list[Frame]:
    if not VAL.is_dir():
        pytest.skip(f"no ISIC 2017 validation images at {VAL}")
    paths = sorted(VAL.glob("*.jpg"))[:count]
    return [Frame(cv2.imread(str(p)), i, i, Fraction(1, 25), 0.0) for i, p in enumerate(paths)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache") / "slsnet"


@pytest.fixture(scope="module")
def shipped(cache) -> OnnxEngine:
    if not WEIGHTS.is_file():
        pytest.skip("no shipped weights")
    return OnnxEngine(load_generator(WEIGHTS), threads=1, cache_dir=cache)


FP32_UNIT = 2.0**-24  # unit roundoff of float32


def fp32_order_tolerance(generator: torch.nn.Module, expected: np.ndarray) -> np.ndarray:
    """Per pixel: how far two fp32 evaluations that sum in different orders may lie apart.

    Each convolution sums K = C_in·k_h·k_w products; summed in another order (another CPU's
    vector width, ONNX Runtime's kernels) the sum moves by about √K·u relative (rounding errors
    of random sign add up like a random walk), and the layers' errors add up along the depth D.
    The logit z thus moves by up to |z|·D·√K·u, and the probability σ(z) by σ'(z) = p(1 − p)
    times that; a factor 4 covers the rounding that is not random (attention's softmax, the
    sigmoid itself), and 4u the last bit of p.
    """
    convs = [m for m in generator.modules() if isinstance(m, torch.nn.Conv2d)]
    k_max = max(m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] for m in convs)
    relative = 4 * len(convs) * np.sqrt(k_max) * FP32_UNIT
    p = np.clip(expected.astype(np.float64), 1e-7, 1 - 1e-7)
    logit = np.abs(np.log(p / (1 - p)))
    return p * (1 - p) * (logit + 1) * relative + 4 * FP32_UNIT


def test_shipped_weights_onnx_equals_torch_on_validation_images(shipped):
    # given real validation images as the network's input batch (dynamic batch of 4)
    frames = val_frames()
    from stream.engines.preprocess import to_input_tensor

    x = to_input_tensor([f.image for f in frames], shipped.size)
    # when
    generator = load_generator(WEIGHTS)
    with torch.inference_mode():
        expected = generator(x)[:, 0].numpy()
    got = shipped.probabilities(x)
    # then: the probabilities differ by no more than fp32 summation order allows
    assert got.shape == (4, 128, 128) and got.dtype == np.float32
    tolerance = fp32_order_tolerance(generator, expected)
    assert np.all(np.abs(got.astype(np.float64) - expected) <= tolerance)
    assert (expected > 0.5).any() and (expected < 0.5).any()  # real lesions, not a blank map
    # and the masks a user sees are the same, except where torch's probability lies within that
    # tolerance of the threshold (either side is a correct fp32 answer there)
    threshold = shipped.threshold
    differ = (got > threshold) != (expected > threshold)
    assert np.all(np.abs(expected[differ] - threshold) <= tolerance[differ])


@pytest.fixture(scope="module")
def random_engine(cache) -> OnnxEngine:
    return OnnxEngine(open_gates(), threads=1, cache_dir=cache)


@pytest.mark.parametrize("size", [128, 64])
def test_random_weights_onnx_equals_torch(random_engine, size):
    # given random weights with every attention gate open, at the trained and another size
    generator, engine = random_engine.generator, random_engine
    torch.manual_seed(size)
    x = torch.rand(3, 3, size, size) * 2 - 1
    # when
    with torch.inference_mode():
        expected = generator(x)[:, 0].numpy()
    # then
    assert np.abs(engine.probabilities(x) - expected).max() < 1e-4


def test_engine_masks_equal_the_torch_engine(shipped):
    # given the shipped weights in both engines and full-size validation frames
    torch_engine = CpuEngine(load_generator(WEIGHTS), threads=1)
    frames, twins = val_frames(), val_frames()
    # when
    shipped.infer(frames)
    torch_engine.infer(twins)
    # then: masks agree except where the probability sits on the threshold. Tolerance: at most
    # 20 pixels a frame may differ, each within 1e-3 of the threshold in torch's probability.
    for frame, twin in zip(frames, twins, strict=True):
        assert frame.mask.shape == twin.mask.shape == frame.image.shape[:2]
        assert frame.mask.dtype == np.uint8 and 0 < frame.mask.mean() < 1
        differ = frame.mask != twin.mask
        assert differ.sum() <= 20
        h, w = frame.mask.shape
        prob = cv2.resize(twin.prob, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.all(np.abs(prob[differ] - shipped.threshold) < 1e-3)
        assert set(frame.timings) >= {"preprocess", "infer", "postprocess"}
    assert shipped.name == "cpu fp32 onnxruntime, 1 thread"
    assert shipped.session.get_session_options().intra_op_num_threads == 1


def test_cache_is_reused_and_a_corrupt_file_is_rebuilt(shipped, cache, tmp_path):
    # given the model the shipped engine exported into the cache
    assert shipped.exported and shipped.onnx_path.parent == cache
    before = shipped.onnx_path.read_bytes()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    # when the same weights are built again: no export, the same file
    again = OnnxEngine(load_generator(WEIGHTS), threads=1, cache_dir=cache)
    assert not again.exported and again.onnx_path == shipped.onnx_path
    assert again.onnx_path.read_bytes() == before
    np.testing.assert_array_equal(again.probabilities(x), shipped.probabilities(x))
    # when a copy of the cache is damaged (truncated), beside stale models of other weights
    damaged = tmp_path / "slsnet"
    damaged.mkdir()
    (damaged / shipped.onnx_path.name).write_bytes(before[: len(before) // 3])
    for i in range(KEEP + 2):
        stale = damaged / f"slsnet-stale{i}.onnx"
        stale.write_bytes(b"old")
        os.utime(stale, (1e9 + i, 1e9 + i))
    rebuilt = OnnxEngine(load_generator(WEIGHTS), threads=1, cache_dir=damaged)
    # then it is exported again, rewritten whole, and the oldest stale models are pruned
    assert rebuilt.exported and rebuilt.onnx_path.read_bytes() == before
    np.testing.assert_allclose(rebuilt.probabilities(x), shipped.probabilities(x), atol=1e-6)
    left = sorted(p.name for p in damaged.glob("slsnet-*.onnx"))
    assert len(left) == KEEP and shipped.onnx_path.name in left
    assert not list(damaged.glob("*.tmp"))


def test_an_unwritable_cache_only_costs_the_export(tmp_path):
    # given a cache "folder" that is a file
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    generator = open_gates(seed=2)
    # when
    engine = OnnxEngine(generator, threads=1, cache_dir=blocker / "slsnet")
    # then the engine runs, uncached
    assert engine.exported and engine.onnx_path is None
    with torch.inference_mode():
        expected = generator(torch.zeros(1, 3, 128, 128))[:, 0].numpy()
    assert np.abs(engine.probabilities(torch.zeros(1, 3, 128, 128)) - expected).max() < 1e-4


def run_demo(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([sys.executable, str(ROOT / "demo.py"), "--threads", "1", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_runtime_onnx_processes_every_frame_like_torch(tmp_path, shipped, cache):
    # given a tiny clip, and the shipped weights' model already in the cache
    clip = write_clip(tmp_path / "clip.mp4", frames=12, size_wh=(96, 64))
    rows = {}
    for runtime in ("onnx", "torch"):
        # when
        out = tmp_path / f"{runtime}.csv"
        proc = run_demo("--video", str(clip.path), "--csv", str(out), "--no-display",
                        "--device", "cpu", "--runtime", runtime, "--weights", str(WEIGHTS),
                        cwd=tmp_path, cache=cache.parent)
        # then
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows[runtime] = out.read_text().strip().splitlines()
        assert ("onnxruntime" in proc.stderr) == (runtime == "onnx")
    assert len(rows["onnx"]) == len(rows["torch"]) == 1 + 12  # header + every frame
    assert shipped.onnx_path.name in [p.name for p in cache.glob("*.onnx")]
    assert "exported the generator" not in proc.stderr  # reused, not exported again


@pytest.mark.parametrize(("args", "message"), [
    (["--runtime", "onnx", "--precision", "bf16"], "--runtime onnx runs fp32 only"),
    (["--runtime", "onnx", "--precision", "fp16"], "--runtime onnx runs fp32 only"),
])
def test_runtime_mistakes_are_one_error_line(tmp_path, capsys, args, message):
    clip = write_clip(tmp_path / "clip.mp4", frames=2, size_wh=(96, 64))
    argv = ["--video", str(clip.path), "--no-display", "--device", "cpu", "--threads", "1", *args]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_runtime_onnx_without_onnxruntime_says_how_to_install(tmp_path, capsys, monkeypatch):
    # given onnxruntime cannot be imported (None in sys.modules: how Python marks it absent)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    clip = write_clip(tmp_path / "clip.mp4", frames=2, size_wh=(96, 64))
    # when / then
    assert main(["--video", str(clip.path), "--no-display", "--device", "cpu",
                 "--runtime", "onnx"]) == 1
    assert capsys.readouterr().err.strip() == (
        'error: --runtime onnx needs onnxruntime, which is not installed: pip install ".[cpu]"')
    # and auto falls back to torch
    engine = build_engine(device=CPU, weights=None, runtime="auto", threads=1)
    assert type(engine) is CpuEngine and "onnxruntime" not in engine.name


def test_runtime_choices_per_device():
    with pytest.raises(EngineError, match="runs on the CPU only"):
        build_engine(device=torch.device("cuda"), weights=None, runtime="onnx")
    with pytest.raises(EngineError, match="unknown runtime"):
        build_engine(device=CPU, weights=None, runtime="tensorrt")
    with pytest.raises(EngineError, match="unknown attention form 'flash'"):
        OnnxEngine(build_generator().eval(), attention="flash")
    # bf16 is a torch-only precision: auto keeps torch for it
    engine = build_engine(device=CPU, weights=None, precision="bf16", runtime="auto", threads=1)
    assert type(engine) is CpuEngine and engine.precision == "bf16"


def test_bad_runtime_flag_exits_2_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--runtime", "tensorrt"])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_bench_times_onnxruntime_against_torch(random_engine, cache):
    from stream.bench.cpu_forms import Form
    from stream.bench.measure import Timing
    from stream.bench.speed import cpu_model_rows

    # given the engine's generator and session, at a small size to keep it quick
    plain = OnnxEngine(random_engine.generator, threads=1, cache_dir=cache, attention="plain")
    forms = [Form("fp32 onnxruntime", random_engine.probabilities),
             Form("fp32 onnxruntime, plain attention", plain.probabilities)]
    rows = cpu_model_rows(random_engine.generator, size=32, timing=Timing(1, 3, 1, 1, 0),
                          batch=1, onnx=forms)
    # then one ONNX Runtime row per form at batch 1, with its FPS and its ratio to torch fp32
    (torch_row,) = [r for r in rows if r.mode == "fp32 eager" and r.p50_ms is not None]
    for mode in ("fp32 onnxruntime", "fp32 onnxruntime, plain attention"):
        (onnx_row,) = [r for r in rows if r.mode == mode]
        assert onnx_row.batch == 1 and 0 < onnx_row.p50_ms <= onnx_row.p99_ms
        ratio = f"{torch_row.p50_ms / onnx_row.p50_ms:.2f}× torch fp32 eager"
        assert onnx_row.note == f"{1e3 / onnx_row.p50_ms:.1f} FPS, {ratio} (timed in turn)"
    assert plain.name == "cpu fp32 onnxruntime (plain attention), 1 thread"
    assert plain.onnx_path != random_engine.onnx_path  # cached apart
