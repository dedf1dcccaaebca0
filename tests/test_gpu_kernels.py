"""GPU preprocessing/postprocessing math and the CUDA engine.

On any machine: the numpy references (the definition of what the CuPy kernels compute) against
the CPU path (OpenCV + slsnet.data), and the torch implementation against the references.
Marked ``cuda`` (run on a lent GPU by scripts/gpu_check.sh): the CuPy kernels against the
references, and the CUDA engine against the CPU engine, graph against eager, batches and ring.

Tolerances, stated once:
- preprocessing vs the CPU path: ≤ 0.5 grey level (area) / 1 grey level (linear), because
  OpenCV rounds its resized pixels to uint8 and the GPU keeps the float;
- kernels vs the references: 1e-5 in fp32, 1e-3 in fp16, 8e-3 in bf16 (one rounding step);
- engine vs CPU engine: probability max abs diff ≤ 2e-2 (fp16 or fp32), mask agreement
  ≥ 99.5 % of pixels; fp32 engine (no TF32) vs the same math on the CPU: ≤ 1e-3 and ≥ 99.9 %;
  graph vs eager, batched vs one at a time: ≤ 1e-3 and ≥ 99.9 %.
"""

from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slsnet import build_generator
from stream.frame import Frame
from stream.gpu_kernels import (
    TorchKernels,
    area_taps,
    input_taps,
    linear_taps,
    mask_reference,
    output_taps,
    preprocess_reference,
    upsample_reference,
)
from stream.postprocess import prob_to_mask
from stream.preprocess import to_input_tensor

GREY = 2 / 255  # one grey level after normalisation to [-1, 1]
AREA_SIZES = [(1920, 1080), (640, 480), (333, 200), (128, 128), (129, 130), (3840, 2160)]
LINEAR_SIZES = [(100, 80), (1920, 100), (64, 300)]


def bgr(size_wh, seed=0, n=None):
    """Random texture plus a smooth gradient, so that both fine and coarse errors show."""
    w, h = size_wh
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if n is None else (n, h, w, 3)
    noise = rng.integers(0, 256, shape, dtype=np.int16)
    ramp = (np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 1))).astype(np.int16)
    return ((noise + ramp) // 2).astype(np.uint8)


def smooth_prob(size=128, seed=0):
    rng = np.random.default_rng(seed)
    p = cv2.GaussianBlur(rng.random((size, size), dtype=np.float32), (0, 0), 6)
    return ((p - p.min()) / (p.max() - p.min())).astype(np.float32)


# ------------------------------------------------------------------ references vs the CPU path
@pytest.mark.parametrize("size_wh", AREA_SIZES + LINEAR_SIZES)
def test_taps_are_normalised_and_in_bounds(size_wh):
    for taps, src in zip(input_taps(size_wh, 128), size_wh, strict=True):
        assert taps.index.min() >= 0 and taps.index.max() < src
        np.testing.assert_allclose(taps.weight.sum(1), 1.0, atol=2e-3)
    for taps in output_taps(128, size_wh):
        assert taps.k == 2 and taps.index.max() < 128


def test_area_taps_are_a_box_filter_at_integer_ratios():
    taps = area_taps(1920, 128)
    assert taps.k == 15
    np.testing.assert_allclose(taps.weight, 1 / 15, rtol=1e-6)
    assert taps.index[1].tolist() == list(range(15, 30))


@pytest.mark.parametrize("size_wh", AREA_SIZES)
def test_preprocess_reference_matches_the_cpu_engine_area(size_wh):
    # given a frame at least S×S (INTER_AREA on the CPU)
    image = bgr(size_wh)
    # when
    ref = preprocess_reference(image, 128)
    cpu = to_input_tensor([image], 128).numpy()
    # then: equal up to OpenCV's rounding to uint8
    assert ref.shape == cpu.shape == (1, 3, 128, 128)
    assert np.abs(ref - cpu).max() <= 0.5 * GREY + 1e-5


@pytest.mark.parametrize("size_wh", LINEAR_SIZES)
def test_preprocess_reference_matches_the_cpu_engine_linear(size_wh):
    image = bgr(size_wh, seed=1)
    diff = np.abs(preprocess_reference(image, 128) - to_input_tensor([image], 128).numpy())
    assert diff.max() <= GREY + 1e-5  # OpenCV's 11-bit fixed-point linear weights


def test_preprocess_reference_swaps_bgr_to_rgb():
    blue = np.zeros((200, 300, 3), np.uint8)
    blue[..., 0] = 255
    x = preprocess_reference(blue, 128)
    np.testing.assert_allclose(x[0, 2], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[0, :2], -1.0, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(w=st.integers(1, 400), h=st.integers(1, 400), seed=st.integers(0, 2**16))
def test_preprocess_reference_matches_the_cpu_engine_any_size(w, h, seed):
    image = bgr((w, h), seed=seed)
    diff = np.abs(preprocess_reference(image, 128) - to_input_tensor([image], 128).numpy())
    assert diff.max() <= GREY + 1e-5


@pytest.mark.parametrize("size_wh", [(1920, 1080), (640, 480), (333, 200), (128, 128), (100, 80)])
def test_mask_reference_matches_prob_to_mask(size_wh):
    # given a smooth probability map (edges cross the threshold along curves)
    prob = smooth_prob(seed=sum(size_wh))
    # when
    up = upsample_reference(prob, size_wh)
    ref = mask_reference(prob, size_wh, 0.5)
    cpu = prob_to_mask(prob, size_wh, 0.5)
    # then: the same bilinear values, the same mask except exactly at the threshold
    cv = cv2.resize(prob, size_wh, interpolation=cv2.INTER_LINEAR)
    assert np.abs(up - cv).max() <= 1e-5
    decided = np.abs(cv - 0.5) > 1e-5
    assert ref.shape == cpu.shape == (size_wh[1], size_wh[0]) and ref.dtype == np.uint8
    assert np.array_equal(ref[decided], cpu[decided])
    assert 0.2 < ref.mean() < 0.8  # the test map really has both classes


def test_linear_taps_clamp_like_opencv_at_the_borders():
    taps = linear_taps(128, 1080)
    assert taps.index[0].tolist() == [0, 1] and taps.weight[0, 1] == 0  # left edge: pure pixel 0
    assert taps.index[-1].tolist() == [127, 127]


# ----------------------------------------------------------------- torch kernels vs references
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_torch_kernels_preprocess_equals_reference(memory_format):
    # given two different frames; the second output row poisoned with NaN
    frames = bgr((333, 200), seed=3, n=2)
    kernels = TorchKernels(torch.device("cpu"))
    out = torch.full((2, 3, 128, 128), float("nan")).contiguous(memory_format=memory_format)
    taps = kernels.upload(*input_taps((333, 200), 128))
    # when only the first frame is processed
    kernels.preprocess(torch.from_numpy(frames), taps, out, out.dtype, frames=1)
    # then it equals the reference and the second row is untouched
    np.testing.assert_allclose(out[:1].numpy(), preprocess_reference(frames[:1], 128), atol=1e-5)
    assert out[1].isnan().all()


def test_torch_kernels_postprocess_equals_reference():
    probs = np.stack([smooth_prob(seed=1), smooth_prob(seed=2)])
    kernels = TorchKernels(torch.device("cpu"))
    mask = torch.full((2, 90, 160), 7, dtype=torch.uint8)
    taps = kernels.upload(*output_taps(128, (160, 90)))
    kernels.postprocess(torch.from_numpy(probs), taps, mask, 0.5, frames=2)
    for i in range(2):
        ref = mask_reference(probs[i], (160, 90), 0.5)
        assert (mask[i].numpy() == ref).mean() >= 0.9999


# ---------------------------------------------------------------------- the engine, CPU side
def test_engine_cuda_imports_without_cupy_and_refuses_the_cpu():
    import sys

    from stream import engine_cuda

    assert "cupy" not in sys.modules
    with pytest.raises(RuntimeError, match="CUDA"):
        engine_cuda.CudaEngine(build_generator(), device=torch.device("cpu"))


def test_chunks_cut_by_batch_and_by_frame_size():
    from stream.engine_cuda import chunks

    frames = [make_frame((64, 48) if i < 5 else (32, 24), i) for i in range(8)]
    out = chunks(frames, 2)
    assert [[f.index for f in c] for c in out] == [[0, 1], [2, 3], [4], [5, 6], [7]]


def test_resolve_precision():
    from stream.engine import EngineError
    from stream.engine_cuda import resolve_precision

    assert resolve_precision("auto") == "fp16" and resolve_precision("bf16") == "bf16"
    with pytest.raises(EngineError, match="unknown precision"):
        resolve_precision("int8")


# ------------------------------------------------------------------------------ on a GPU
def make_frame(size_wh, index=0, seed=None):
    """A frame with a dark disc whose place depends on ``index`` (frames are told apart)."""
    w, h = size_wh
    rng = np.random.default_rng(index if seed is None else seed)
    image = np.empty((h, w, 3), np.uint8)
    image[:] = (150, 170, 215)
    cx, cy = w * (0.3 + 0.4 * rng.random()), h * (0.3 + 0.4 * rng.random())
    cv2.circle(image, (int(cx), int(cy)), int(0.2 * min(w, h)) + 1, (40, 55, 90), -1)
    image = cv2.add(image, rng.integers(0, 12, image.shape, dtype=np.uint8))
    return Frame(image=image, index=index, pts=index, time_base=Fraction(1, 30), capture_time=0.0)


@pytest.fixture(scope="module")
def generator():
    """Trained weights when present; else a seeded random net whose head is rescaled so that its
    probabilities spread across 0.5 (raw random weights give ~0.55 everywhere: a mask test on
    them would compare two all-ones masks)."""
    from stream.engine import find_default_weights, load_weights

    gen, untrained, _ = load_weights(find_default_weights())
    if untrained:
        x = torch.from_numpy(preprocess_reference(make_frame((640, 480)).image, 128))
        with torch.no_grad():
            logits = gen.logits(x)
            gen.head.bias -= logits.median()
            gen.head.weight *= 2.0 / float(logits.std())
            gen.head.bias *= 2.0 / float(logits.std())
    return gen.eval()


def cpu_reference(generator, frames):
    """The CPU engine's results (OpenCV resize rounded to uint8, fp32 network)."""
    from stream.engine import CpuEngine

    out = [Frame(f.image, f.index, f.pts, f.time_base, 0.0) for f in frames]
    CpuEngine(generator, precision="fp32", channels_last=False).infer(out)
    return out


def exact_reference(generator, frames):
    """The GPU path's own math on the CPU: unrounded reference preprocessing, fp32 network."""
    size, thr = generator.config.input_size, generator.config.threshold
    x = torch.from_numpy(np.concatenate([preprocess_reference(f.image, size) for f in frames]))
    with torch.inference_mode():
        probs = generator(x)[:, 0].numpy()
    out = []
    for f, prob in zip(frames, probs, strict=True):
        out.append(Frame(f.image, f.index, f.pts, f.time_base, 0.0, prob=prob,
                         mask=mask_reference(prob, f.size_wh, thr)))
    return out


def assert_close(frames, refs, *, prob_tol, agree):
    for f, r in zip(frames, refs, strict=True):
        assert f.mask.shape == r.mask.shape and f.mask.dtype == np.uint8
        assert f.prob.shape == r.prob.shape and f.prob.dtype == np.float32
        assert np.abs(f.prob - r.prob).max() <= prob_tol, f"frame {f.index}"
        assert (f.mask == r.mask).mean() >= agree, f"frame {f.index}"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-3),
                                       (torch.bfloat16, 8e-3)])
def test_cupy_preprocess_equals_reference(dtype, tol):
    from stream.gpu_kernels import CupyKernels

    # given three 1080p frames; the output poisoned with NaN, in the engine's layout
    dev = torch.device("cuda")
    frames = bgr((1920, 1080), seed=5, n=3)
    kernels = CupyKernels(dev)
    stream = torch.cuda.current_stream()
    fmt = torch.contiguous_format if dtype == torch.float32 else torch.channels_last
    out = torch.full((3, 3, 128, 128), float("nan"), device=dev, dtype=dtype)
    out = out.contiguous(memory_format=fmt)
    src = torch.from_numpy(frames).to(dev)
    taps = kernels.upload(*input_taps((1920, 1080), 128))
    # when two of three frames are processed
    kernels.preprocess(kernels.view(src), taps, kernels.view(out), dtype, frames=2, stream=stream)
    got = out.float().cpu().numpy()
    # then they equal the reference; the third is untouched
    assert np.abs(got[:2] - preprocess_reference(frames[:2], 128)).max() <= tol
    assert np.isnan(got[2]).all()


@pytest.mark.cuda
@pytest.mark.parametrize("size_wh", [(1920, 1080), (333, 200), (100, 80)])
def test_cupy_postprocess_equals_reference(size_wh):
    from stream.gpu_kernels import CupyKernels

    dev = torch.device("cuda")
    w, h = size_wh
    probs = np.stack([smooth_prob(seed=7), smooth_prob(seed=8)])
    kernels = CupyKernels(dev)
    mask = torch.full((2, h, w), 7, dtype=torch.uint8, device=dev)  # poison: must be overwritten
    prob = torch.from_numpy(probs).to(dev)
    taps = kernels.upload(*output_taps(128, size_wh))
    kernels.postprocess(kernels.view(prob), taps, kernels.view(mask), 0.5, frames=2,
                        stream=torch.cuda.current_stream())
    got = mask.cpu().numpy()
    assert set(np.unique(got)) <= {0, 1}
    for i in range(2):
        up = upsample_reference(probs[i], size_wh)
        decided = np.abs(up - 0.5) > 1e-5
        assert np.array_equal(got[i][decided], (up > 0.5)[decided])


@pytest.mark.cuda
def test_torch_kernels_on_cuda_equal_reference():
    dev = torch.device("cuda")
    frames = bgr((640, 480), seed=9, n=2)
    kernels = TorchKernels(dev)
    out = torch.empty((2, 3, 128, 128), device=dev)
    kernels.preprocess(torch.from_numpy(frames).to(dev),
                       kernels.upload(*input_taps((640, 480), 128)), out, out.dtype, frames=2)
    assert np.abs(out.cpu().numpy() - preprocess_reference(frames, 128)).max() <= 1e-5


@pytest.mark.cuda
def test_engine_fp32_matches_the_cpu_path(generator, monkeypatch):
    from stream.engine_cuda import CudaEngine

    # TF32 convolutions would add ~1e-3 relative error; this test checks the pipeline's math
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    frames = [make_frame((1280, 720), i) for i in range(3)]
    engine = CudaEngine(generator, device=torch.device("cuda"), precision="fp32", cuda_graph=False)
    engine.infer(frames)
    # the same math on the CPU: equal up to float rounding
    assert_close(frames, exact_reference(generator, frames), prob_tol=1e-3, agree=0.999)
    # the CPU engine (which rounds its resized pixels to uint8): within the stated tolerance
    assert_close(frames, cpu_reference(generator, frames), prob_tol=2e-2, agree=0.995)
    assert all(f.timings["infer"] > 0 and f.timings["preprocess"] > 0 for f in frames)


@pytest.mark.cuda
@pytest.mark.parametrize("kernels", ["cupy", "torch"])
def test_engine_fp16_graph_matches_the_cpu_engine(generator, kernels):
    from stream.engine import Engine
    from stream.engine_cuda import CudaEngine

    frames = [make_frame((1920, 1080), i) for i in range(4)]
    refs = cpu_reference(generator, frames)
    engine = CudaEngine(generator, device=torch.device("cuda"), kernels=kernels)
    assert isinstance(engine, Engine) and engine.name.startswith("cuda fp16 graph")
    engine.infer(frames)
    assert_close(frames, refs, prob_tol=2e-2, agree=0.995)


@pytest.mark.cuda
def test_graph_equals_eager(generator):
    from stream.engine_cuda import CudaEngine

    dev = torch.device("cuda")
    graph = [make_frame((1920, 1080), i) for i in range(4)]
    eager = [make_frame((1920, 1080), i) for i in range(4)]
    CudaEngine(generator, device=dev).infer(graph)
    CudaEngine(generator, device=dev, cuda_graph=False).infer(eager)
    assert_close(graph, eager, prob_tol=1e-3, agree=0.999)


@pytest.mark.cuda
def test_batches_and_ring_keep_frames_apart(generator):
    from stream.engine_cuda import CudaEngine

    # given 7 distinct frames: batches of 3 (the last one padded) through a ring of 2 slots
    dev = torch.device("cuda")
    frames = [make_frame((640, 360), i) for i in range(7)]
    single = [make_frame((640, 360), i) for i in range(7)]
    CudaEngine(generator, device=dev, cuda_graph=False).infer(single)  # one frame at a time
    # when
    CudaEngine(generator, device=dev, batch=3, ring=2).infer(frames)
    # then every frame got its own result (other batch shapes: other cuDNN kernels, fp16 noise)
    assert_close(frames, single, prob_tol=2e-2, agree=0.995)
    for i, f in enumerate(frames):
        own = np.abs(f.prob - single[i].prob).mean()
        assert all(own < np.abs(f.prob - s.prob).mean() for j, s in enumerate(single) if j != i)


@pytest.mark.cuda
def test_submit_collect_overlap_and_size_changes(generator):
    from stream.engine_cuda import CudaEngine

    dev = torch.device("cuda")
    engine = CudaEngine(generator, device=dev, ring=3)
    sizes = [(640, 480)] * 4 + [(320, 240)] * 2 + [(640, 480)] * 2
    frames = [make_frame(s, i) for i, s in enumerate(sizes)]
    refs = [make_frame(s, i) for i, s in enumerate(sizes)]
    CudaEngine(generator, device=dev, cuda_graph=False).infer(refs)
    pending = []
    for f in frames:  # keep up to three batches in flight, as a pipeline would
        pending.append(engine.submit([f]))
        if len(pending) == 3:
            engine.collect(pending.pop(0))
    for p in pending:
        engine.collect(p)
    assert [f.mask.shape for f in frames] == [(h, w) for w, h in sizes]
    assert_close(frames, refs, prob_tol=1e-3, agree=0.999)


@pytest.mark.cuda
def test_staging_buffer_skips_the_copy_and_gives_the_same_result(generator):
    from stream.engine_cuda import CudaEngine

    engine = CudaEngine(generator, device=torch.device("cuda"))
    a = make_frame((1920, 1080), 3)
    buf = engine.staging_buffer((1920, 1080))
    buf[...] = a.image
    b = Frame(buf, 3, 3, Fraction(1, 30), 0.0)
    engine.infer([b])
    engine.infer([a])
    assert np.array_equal(a.mask, b.mask) and np.array_equal(a.prob, b.prob)


# ------------------------------------------------- the CUDA source itself, run on the host
HOST_SHIM = r"""
#include <cstdint>
struct uint3_ { unsigned x, y, z; };
static uint3_ blockIdx, threadIdx, blockDim;
#define __global__
#define __restrict__
"""
HOST_RUNNERS = r"""
#define GRID_LOOP(gx, gy, block, CALL) \
    blockDim = {block, 1, 1}; \
    for (unsigned by = 0; by < gy; ++by) for (unsigned bx = 0; bx < gx; ++bx) \
        for (unsigned tx = 0; tx < block; ++tx) { \
            blockIdx = {bx, by, 0}; threadIdx = {tx, 0, 0}; CALL; }
extern "C" void run_preprocess(unsigned gx, unsigned gy, unsigned block,
    const unsigned char* src, long long fp, long long rp, const int* xi, const float* xw, int kx,
    const int* yi, const float* yw, int ky, int size, float scale, float bias, float* out,
    long long sb, long long sc, long long sy, long long sx) {
    GRID_LOOP(gx, gy, block, preprocess_float32(src, fp, rp, xi, xw, kx, yi, yw, ky, size,
                                                scale, bias, out, sb, sc, sy, sx))
}
extern "C" void run_mask(unsigned gx, unsigned gy, unsigned block, const float* prob, int size,
    const int* xi, const float* xw, int w, const int* yi, const float* yw, int h, float thr,
    unsigned char* mask) {
    GRID_LOOP(gx, gy, block, upsample_threshold(prob, size, xi, xw, w, yi, yw, h, thr, mask))
}
"""


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """The CuPy kernels' CUDA source compiled for the host, one thread at a time (float32)."""
    import ctypes
    import shutil
    import subprocess

    from stream.gpu_kernels import _MASK_SOURCE, _SOURCE

    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to run the kernel source on the host")
    src = _SOURCE.replace("OUTNAME", "float32").replace("OUT_T", "float").replace("TO_OUT", "")
    folder = tmp_path_factory.mktemp("host_kernels")
    (folder / "k.cpp").write_text(HOST_SHIM + src + _MASK_SOURCE + HOST_RUNNERS)
    subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-std=c++17", "-o", str(folder / "k.so"),
                    str(folder / "k.cpp")], check=True, capture_output=True, timeout=120)
    return ctypes.CDLL(str(folder / "k.so"))


def _ptr(a):
    import ctypes

    return ctypes.c_void_p(a.ctypes.data)


def test_cuda_preprocess_source_equals_reference_on_the_host(host_kernels):
    import ctypes

    # given 2 frames with padded rows (pitch > 3·W) and a channels_last output poisoned with NaN
    w, h, size, block = 333, 200, 128, 128
    frames = np.zeros((2, h, w * 3 + 7), np.uint8)
    frames[:, :, : w * 3] = bgr((w, h), seed=11, n=2).reshape(2, h, w * 3)
    out = np.full((2, size, size, 3), np.nan, np.float32)  # NHWC memory = channels_last NCHW
    tx, ty = input_taps((w, h), size)
    grid = ((size * size + block - 1) // block, 2)
    ll, i32, f32 = ctypes.c_longlong, ctypes.c_int, ctypes.c_float
    from stream.gpu_kernels import NORM_BIAS, NORM_SCALE

    # when the kernel source runs every (block, thread) of the launch
    host_kernels.run_preprocess(
        ctypes.c_uint(grid[0]), ctypes.c_uint(grid[1]), ctypes.c_uint(block), _ptr(frames),
        ll(frames.strides[0]), ll(frames.strides[1]), _ptr(tx.index), _ptr(tx.weight), i32(tx.k),
        _ptr(ty.index), _ptr(ty.weight), i32(ty.k), i32(size), f32(NORM_SCALE), f32(NORM_BIAS),
        _ptr(out), ll(size * size * 3), ll(1), ll(size * 3), ll(3))
    # then every output is written and equals the numpy reference
    ref = preprocess_reference(frames[:, :, : w * 3].reshape(2, h, w, 3), size)
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out.transpose(0, 3, 1, 2), ref, atol=1e-5)


def test_cuda_mask_source_equals_reference_on_the_host(host_kernels):
    import ctypes

    w, h, size = 161, 97, 128
    probs = np.stack([smooth_prob(seed=4), smooth_prob(seed=5)])
    mask = np.full((2, h, w), 7, np.uint8)
    tx, ty = output_taps(size, (w, h))
    host_kernels.run_mask(
        ctypes.c_uint((w * h + 255) // 256), ctypes.c_uint(2), ctypes.c_uint(256), _ptr(probs),
        ctypes.c_int(size), _ptr(tx.index), _ptr(tx.weight), ctypes.c_int(w), _ptr(ty.index),
        _ptr(ty.weight), ctypes.c_int(h), ctypes.c_float(0.5), _ptr(mask))
    for i in range(2):
        up = upsample_reference(probs[i], (w, h))
        decided = np.abs(up - 0.5) > 1e-5
        assert set(np.unique(mask[i])) <= {0, 1}
        assert np.array_equal(mask[i][decided], (up > 0.5)[decided].astype(np.uint8))
