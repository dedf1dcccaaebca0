"""GPU preprocessing and mask resizing: the references, the torch and the CuPy kernels.

On any machine: the numpy references (the definition of what the CuPy kernels compute) against
the CPU path (OpenCV + slsnet.data), the torch implementation against the references, and the
CUDA source of the kernels compiled for the host and run thread by thread. Marked ``cuda`` (run
on a lent GPU by scripts/gpu_check.sh): the CuPy kernels against the references. The engine's
tests are in test_engine_cuda.py.

Tolerances:
- preprocessing vs the CPU path: ≤ 0.5 grey level (area) / 1 grey level (linear), because
  OpenCV rounds its resized pixels to uint8 and the GPU keeps the float;
- kernels vs the references: 1e-5 in fp32, 1e-3 in fp16, 8e-3 in bf16 (one rounding step);
- masks: identical wherever the upsampled probability is more than 1e-5 from the threshold.
"""

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.engines.gpu_kernels import _MASK_SOURCE, _SOURCE, CupyKernels, StreamHandle
from stream.engines.postprocess import prob_to_mask
from stream.engines.preprocess import to_input_tensor
from stream.engines.resample import (
    NORM_BIAS,
    NORM_SCALE,
    area_taps,
    input_taps,
    linear_taps,
    mask_reference,
    output_taps,
    preprocess_reference,
    upsample_reference,
)
from stream.engines.torch_kernels import TorchKernels

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


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-3),
                                       (torch.bfloat16, 8e-3)])
def test_cupy_preprocess_equals_reference(dtype, tol):
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


def test_stream_handle_speaks_the_cuda_stream_protocol():
    assert StreamHandle(0x7F00_1234).__cuda_stream__() == (0, 0x7F00_1234)


@pytest.mark.cuda
def test_cupy_launches_on_torch_streams_without_deprecated_api():
    import warnings

    # given a side stream of torch's
    dev = torch.device("cuda")
    side = torch.cuda.Stream(dev)
    probs = torch.from_numpy(np.stack([smooth_prob(seed=3)])).to(dev)
    mask = torch.zeros((1, 64, 64), dtype=torch.uint8, device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    # when CuPy launches on it
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # CuPy 14: ExternalStream is
        kernels = CupyKernels(dev)
        with torch.cuda.stream(side):
            kernels.postprocess(kernels.view(probs), kernels.upload(*output_taps(128, (64, 64))),
                                kernels.view(mask), 0.5, frames=1, stream=side)
    side.synchronize()
    # then the work ran in that stream's order
    expected = mask_reference(probs[0].cpu().numpy(), (64, 64), 0.5)
    assert (mask[0].cpu().numpy() == expected).mean() >= 0.999


@pytest.mark.cuda
def test_torch_kernels_on_cuda_equal_reference():
    dev = torch.device("cuda")
    frames = bgr((640, 480), seed=9, n=2)
    kernels = TorchKernels(dev)
    out = torch.empty((2, 3, 128, 128), device=dev)
    kernels.preprocess(torch.from_numpy(frames).to(dev),
                       kernels.upload(*input_taps((640, 480), 128)), out, out.dtype, frames=2)
    assert np.abs(out.cpu().numpy() - preprocess_reference(frames, 128)).max() <= 1e-5


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
