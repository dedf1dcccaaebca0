"""Preprocessing and mask resizing on the GPU, and the same math in numpy and torch.

Both directions are separable resampling with precomputed taps per axis:
``out[y, x] = Σ_i Σ_j wy[y, i]·wx[x, j]·in[iy[y, i], ix[x, j]]`` (the inner sum runs along the row).

- Frame → network input: BGR uint8 H×W×3 → RGB, stretch-resized to S×S, normalised to [-1, 1].
  The taps reproduce ``slsnet.inference.resize_to_input``: OpenCV's INTER_AREA (exact fractional
  box filter) when the frame is at least S×S, else INTER_LINEAR (half-pixel centres, clamped).
  OpenCV rounds its resized pixels to uint8; these implementations keep the float, so they differ
  from the CPU path by at most half a grey level (area) or one grey level (OpenCV's fixed-point
  linear weights), i.e. ≤ 0.004 / ≤ 0.008 after normalisation.
- Probability → mask: S×S float32 → H×W by INTER_LINEAR taps (``cv2.resize`` on float32), then
  ``> threshold`` (as ``slsnet.evaluate`` and the CPU engine do).

Three implementations of the same taps: :func:`preprocess_reference` / :func:`mask_reference`
(numpy, the definition, tested against OpenCV on any machine), :class:`TorchKernels` (the taps as
two dense matrices, batched matmuls; runs on CPU and GPU) and :class:`CupyKernels` (one CuPy
RawKernel each way, used by the CUDA engine). CuPy is imported only when CupyKernels is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from slsnet.config import INPUT_MEAN, INPUT_STD

# v_normalised = v_uint8 · NORM_SCALE + NORM_BIAS  ==  (v / 255 − mean) / std
NORM_SCALE = 1.0 / (255.0 * INPUT_STD)
NORM_BIAS = -INPUT_MEAN / INPUT_STD


@dataclass(frozen=True)
class Taps:
    """Resampling weights along one axis: ``out[i] = Σ_k weight[i, k] · in[index[i, k]]``.

    Rows with fewer taps than K are padded with weight 0 on a valid index, so kernels loop over
    all K taps without bounds checks.
    """

    index: np.ndarray  # dst×K int32, each in [0, src)
    weight: np.ndarray  # dst×K float32
    src: int  # length of the input axis

    @property
    def k(self) -> int:
        """Taps per output sample."""
        return self.index.shape[1]

    def matrix(self) -> np.ndarray:
        """The same taps as a dense dst×src float32 matrix."""
        m = np.zeros((self.index.shape[0], self.src), np.float32)
        rows = np.repeat(np.arange(self.index.shape[0]), self.k)
        np.add.at(m, (rows, self.index.ravel()), self.weight.ravel())
        return m


def _pack(rows: list[list[tuple[int, float]]], src: int) -> Taps:
    k = max(len(r) for r in rows)
    index = np.empty((len(rows), k), np.int32)
    weight = np.zeros((len(rows), k), np.float32)
    for i, r in enumerate(rows):
        index[i] = [t[0] for t in r] + [r[-1][0]] * (k - len(r))
        weight[i, : len(r)] = [t[1] for t in r]
    return Taps(index, weight, src)


def _cv_scale(src: int, dst: int) -> float:
    # cv::resize computes 1 / (dst / src), which can differ from src / dst in the last bit
    return 1.0 / (dst / src)


def area_taps(src: int, dst: int) -> Taps:
    """OpenCV INTER_AREA for shrinking (``computeResizeAreaTab``): an exact fractional box filter.

    Output pixel i covers source interval [i·s, (i+1)·s), s = src/dst; partial pixels at the
    ends weigh by their covered fraction (slivers under 1e-3 are skipped, as in OpenCV).
    """
    if dst > src:
        raise ValueError(f"area taps only shrink ({src} → {dst})")
    scale = _cv_scale(src, dst)
    rows = []
    for d in range(dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s2 = min(math.floor(f2), src - 1)
        s1 = min(math.ceil(f1), s2)
        taps = []
        if s1 - f1 > 1e-3:
            taps.append((s1 - 1, (s1 - f1) / cell))
        taps.extend((s, 1.0 / cell) for s in range(s1, s2))
        if f2 - s2 > 1e-3:
            taps.append((s2, min(f2 - s2, 1.0, cell) / cell))
        rows.append(taps)
    return _pack(rows, src)


def linear_taps(src: int, dst: int) -> Taps:
    """OpenCV INTER_LINEAR: half-pixel centres, source coordinate clamped to [0, src − 1]."""
    scale = _cv_scale(src, dst)
    rows = []
    for d in range(dst):
        f = np.float32((d + 0.5) * scale - 0.5)  # OpenCV computes this in float
        s = math.floor(f)
        frac = np.float32(f - np.float32(s))
        if s < 0:
            s, frac = 0, np.float32(0)
        if s >= src - 1:
            s, frac = src - 1, np.float32(0)
        rows.append([(s, np.float32(1) - frac), (min(s + 1, src - 1), frac)])
    return _pack(rows, src)


def input_taps(size_wh: tuple[int, int], size: int) -> tuple[Taps, Taps]:
    """(x taps, y taps) from a W×H frame to the S×S network input, as ``resize_to_input``."""
    w, h = size_wh
    taps = area_taps if (h >= size and w >= size) else linear_taps
    return taps(w, size), taps(h, size)


def output_taps(size: int, size_wh: tuple[int, int]) -> tuple[Taps, Taps]:
    """(x taps, y taps) from the S×S probability to a W×H mask (bilinear)."""
    w, h = size_wh
    return linear_taps(size, w), linear_taps(size, h)


def _separable(img: np.ndarray, tx: Taps, ty: Taps) -> np.ndarray:
    """N×H×W×C → N×Sy×Sx×C float64: the inner (x) sum first, then y, as the kernels do."""
    rows = img[:, ty.index]  # N×Sy×Ky×W×C
    cols = rows[:, :, :, tx.index]  # N×Sy×Ky×Sx×Kx×C
    inner = np.einsum("nykxjc,xj->nykxc", cols.astype(np.float64), tx.weight.astype(np.float64))
    return np.einsum("nykxc,yk->nyxc", inner, ty.weight.astype(np.float64))


def preprocess_reference(bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 frames (H×W×3 or N×H×W×3) → N×3×S×S float32 normalised RGB network input."""
    batch = bgr[None] if bgr.ndim == 3 else bgr
    tx, ty = input_taps((batch.shape[2], batch.shape[1]), size)
    rgb = _separable(batch, tx, ty)[..., ::-1]  # N×S×S×3
    return (rgb * NORM_SCALE + NORM_BIAS).transpose(0, 3, 1, 2).astype(np.float32)


def upsample_reference(prob: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """S×S float32 probability → H×W float32 (bilinear, as ``cv2.resize`` INTER_LINEAR)."""
    tx, ty = output_taps(prob.shape[0], size_wh)
    return _separable(prob[None, :, :, None], tx, ty)[0, :, :, 0].astype(np.float32)


def mask_reference(prob: np.ndarray, size_wh: tuple[int, int], threshold: float) -> np.ndarray:
    """S×S probability → H×W uint8 {0, 1} mask: bilinear resize, then ``> threshold``."""
    return (upsample_reference(prob, size_wh) > threshold).astype(np.uint8)


class TorchKernels:
    """The same taps as dense matrices: ``out_c = Ry @ in_c @ Rxᵀ`` per channel (torch ops).

    Several kernels per call instead of one, but it runs anywhere torch does: the CUDA engine's
    fallback when CuPy is missing, and the "torch" row of the preprocessing benchmark. Same
    interface as :class:`CupyKernels`; work goes to torch's current stream.
    """

    name = "torch"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """Tensors are used as they are."""
        return tensor

    def upload(self, tx: Taps, ty: Taps) -> tuple[torch.Tensor, torch.Tensor]:
        """(Rxᵀ: src_w×dst_w, Ry: dst_h×src_h) on the device."""
        rxt = torch.from_numpy(np.ascontiguousarray(tx.matrix().T)).to(self.device)
        return rxt, torch.from_numpy(ty.matrix()).to(self.device)

    def preprocess(self, src: torch.Tensor, taps, out: torch.Tensor, out_dtype: torch.dtype, *,
                   frames: int, stream=None) -> None:
        """Write the network input of the first ``frames`` frames.

        Args:
            src: B×H×W×3 uint8 BGR. taps: :meth:`upload` of :func:`input_taps`.
            out: B×3×S×S of ``out_dtype`` (any memory format), written in place.
        """
        rxt, ry = taps
        x = src[:frames].flip(-1).permute(0, 3, 1, 2).float()  # B×3×H×W RGB
        out[:frames].copy_((ry @ x @ rxt).mul_(NORM_SCALE).add_(NORM_BIAS))

    def postprocess(self, prob: torch.Tensor, taps, mask: torch.Tensor, threshold: float, *,
                    frames: int, stream=None) -> None:
        """Masks of the first ``frames`` frames.

        Args:
            prob: B×S×S float32. taps: :meth:`upload` of :func:`output_taps`.
            mask: B×H×W uint8, written in place with ``prob↑ > threshold``.
        """
        rxt, ry = taps
        torch.gt(ry @ prob[:frames] @ rxt, threshold, out=mask[:frames].view(torch.bool))


_SOURCE = r"""
// One thread per output pixel (x fastest, so a warp walks along a row of the frame) and per
// frame (blockIdx.y). Inner loop over the x taps of one source row, outer loop over the y taps.
// Taps padded with weight 0 point at a valid pixel, so there are no bounds checks inside.
extern "C" __global__ void preprocess_OUTNAME(
    const unsigned char* __restrict__ src, long long frame_pitch, long long row_pitch,
    const int* __restrict__ x_index, const float* __restrict__ x_weight, int kx,
    const int* __restrict__ y_index, const float* __restrict__ y_weight, int ky,
    int size, float scale, float bias,
    OUT_T* __restrict__ out, long long sb, long long sc, long long sy, long long sx)
{
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= size * size) return;
    const int oy = p / size, ox = p - oy * size;
    const unsigned char* frame = src + (long long)blockIdx.y * frame_pitch;
    const int* xi = x_index + ox * kx;
    const float* xw = x_weight + ox * kx;
    float b = 0.f, g = 0.f, r = 0.f;
    for (int i = 0; i < ky; ++i) {
        const unsigned char* row = frame + (long long)y_index[oy * ky + i] * row_pitch;
        float rb = 0.f, rg = 0.f, rr = 0.f;
        for (int j = 0; j < kx; ++j) {
            const unsigned char* px = row + 3 * xi[j];
            const float w = xw[j];
            rb += w * (float)px[0];
            rg += w * (float)px[1];
            rr += w * (float)px[2];
        }
        const float w = y_weight[oy * ky + i];
        b += w * rb;
        g += w * rg;
        r += w * rr;
    }
    OUT_T* o = out + (long long)blockIdx.y * sb + (long long)oy * sy + (long long)ox * sx;
    o[0] = TO_OUT(r * scale + bias);  // BGR in, RGB out
    o[sc] = TO_OUT(g * scale + bias);
    o[2 * sc] = TO_OUT(b * scale + bias);
}
"""

_MASK_SOURCE = r"""
// One thread per mask pixel and frame: bilinear taps from the S×S probability, then threshold.
extern "C" __global__ void upsample_threshold(
    const float* __restrict__ prob, int size,
    const int* __restrict__ x_index, const float* __restrict__ x_weight, int width,
    const int* __restrict__ y_index, const float* __restrict__ y_weight, int height,
    float threshold, unsigned char* __restrict__ mask)
{
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= width * height) return;
    const int y = p / width, x = p - y * width;
    const float* pr = prob + (long long)blockIdx.y * size * size;
    const float* r0 = pr + y_index[2 * y] * size;
    const float* r1 = pr + y_index[2 * y + 1] * size;
    const int x0 = x_index[2 * x], x1 = x_index[2 * x + 1];
    const float a0 = x_weight[2 * x], a1 = x_weight[2 * x + 1];
    const float top = r0[x0] * a0 + r0[x1] * a1;
    const float bottom = r1[x0] * a0 + r1[x1] * a1;
    const float v = top * y_weight[2 * y] + bottom * y_weight[2 * y + 1];
    mask[(long long)blockIdx.y * width * height + p] = v > threshold ? 1 : 0;
}
"""

# torch dtype → (output C type, conversion from float). Half types are written as raw 16-bit
# patterns converted by one PTX instruction (round to nearest even), so no CUDA header is needed.
_CONVERT = r"""
__device__ __forceinline__ unsigned short to_f16(float v) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); return h;
}
__device__ __forceinline__ unsigned short to_bf16(float v) {
    unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v)); return h;
}
"""
_OUT_TYPES = {
    torch.float32: ("float", "(float)"),
    torch.float16: ("unsigned short", "to_f16"),
    torch.bfloat16: ("unsigned short", "to_bf16"),  # cvt.bf16 needs sm_80 or newer
}


@dataclass
class DeviceTaps:
    """Taps uploaded for one (x, y) pair, as CuPy arrays (views of torch tensors via DLPack)."""

    x_index: object
    x_weight: object
    kx: int
    y_index: object
    y_weight: object
    ky: int
    keep: tuple  # the torch tensors the CuPy views borrow from


class StreamHandle:
    """A raw ``cudaStream_t`` behind the CUDA stream protocol (``__cuda_stream__``).

    What CuPy 14's ``Stream.from_external`` takes; torch streams do not all implement it.
    """

    def __init__(self, ptr: int) -> None:
        self.ptr = int(ptr)

    def __cuda_stream__(self) -> tuple[int, int]:
        """(protocol version 0, the stream's address)."""
        return 0, self.ptr


def external_stream(cupy, ptr: int, device_id: int):
    """CuPy's handle of a stream it did not create.

    ``Stream.from_external`` where CuPy has it (14 deprecates ``ExternalStream``), else
    ``ExternalStream`` (CuPy 13).
    """
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None:
        return from_external(StreamHandle(ptr))
    return cupy.cuda.ExternalStream(ptr, device_id)


class CupyKernels:
    """The CuPy RawKernels, launched on a torch stream (:func:`external_stream`).

    Inputs and outputs are CuPy views of torch tensors (``cupy.from_dlpack``), so no copy is
    made and no CuPy memory is allocated; the kernels are compiled on first use (warm up before
    a CUDA graph capture: compiling is not allowed while capturing).
    """

    name = "cupy"
    BLOCK = 128

    def __init__(self, device: torch.device) -> None:
        import cupy  # the GPU path only

        self.cp = cupy
        self.device = device
        self._device_id = device.index if device.index is not None else torch.cuda.current_device()
        self._streams: dict[int, object] = {}  # cudaStream_t → CuPy's handle of it
        self._pre: dict[torch.dtype, object] = {}
        self._mask = cupy.RawKernel(_MASK_SOURCE, "upsample_threshold")

    def _preprocess_kernel(self, dtype: torch.dtype):
        if dtype not in self._pre:
            ctype, conv = _OUT_TYPES[dtype]
            name = str(dtype).removeprefix("torch.")
            code = _CONVERT + _SOURCE.replace("OUTNAME", name).replace("OUT_T", ctype)
            self._pre[dtype] = self.cp.RawKernel(code.replace("TO_OUT", conv), f"preprocess_{name}")
        return self._pre[dtype]

    def _stream(self, stream: torch.cuda.Stream):
        """The CuPy handle of a torch stream (kernels launched in it are ordered with torch's)."""
        ptr = stream.cuda_stream
        if ptr not in self._streams:
            with self.cp.cuda.Device(self._device_id):
                self._streams[ptr] = external_stream(self.cp, ptr, self._device_id)
        return self._streams[ptr]

    def view(self, tensor: torch.Tensor):
        """A CuPy array sharing ``tensor``'s memory (DLPack, on torch's current stream).

        CuPy has no bfloat16: such tensors are viewed as int16 (the kernel writes the bits).
        """
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.int16)
        current = torch.cuda.current_stream(self.device)
        with self.cp.cuda.Device(self._device_id), self._stream(current):
            return self.cp.from_dlpack(tensor)

    def upload(self, tx: Taps, ty: Taps) -> DeviceTaps:
        """Copy taps to the device (on torch's current stream) and wrap them for the kernels."""
        arrays = (tx.index, tx.weight, ty.index, ty.weight)
        ts = [torch.from_numpy(a).to(self.device) for a in arrays]
        xi, xw, yi, yw = (self.view(t) for t in ts)
        return DeviceTaps(xi, xw, tx.k, yi, yw, ty.k, tuple(ts))

    def preprocess(self, src, taps: DeviceTaps, out, out_dtype: torch.dtype, *, frames: int,
                   stream: torch.cuda.Stream) -> None:
        """Launch the fused preprocess on ``stream``.

        Args:
            src: CuPy uint8 B×H×W×3 (rows and pixels packed: strides (·, ·, 3, 1)).
            taps: from :meth:`upload` with :func:`input_taps`.
            out: CuPy view of the network input, B×3×S×S of ``out_dtype``, any strides.
            frames: how many of the B frames to process.
        """
        cp = self.cp
        if src.strides[2:] != (3, 1):
            raise ValueError(f"frames must have packed pixels, got strides {src.strides}")
        size = out.shape[-1]
        isz = out.itemsize
        sb, sc, sy, sx = (cp.int64(s // isz) for s in out.strides)
        grid = ((size * size + self.BLOCK - 1) // self.BLOCK, frames)
        args = (src, cp.int64(src.strides[0]), cp.int64(src.strides[1]),
                taps.x_index, taps.x_weight, cp.int32(taps.kx),
                taps.y_index, taps.y_weight, cp.int32(taps.ky),
                cp.int32(size), cp.float32(NORM_SCALE), cp.float32(NORM_BIAS),
                out, sb, sc, sy, sx)
        kernel = self._preprocess_kernel(out_dtype)
        with cp.cuda.Device(self._device_id), self._stream(stream):
            kernel(grid, (self.BLOCK,), args)

    def postprocess(self, prob, taps: DeviceTaps, mask, threshold: float, *, frames: int,
                    stream: torch.cuda.Stream) -> None:
        """Launch bilinear upsample + threshold on ``stream``.

        Args:
            prob: CuPy float32 B×S×S, contiguous.
            taps: from :meth:`upload` with :func:`output_taps` (K = 2 on both axes).
            mask: CuPy uint8 B×H×W, contiguous; written with ``prob↑ > threshold``.
            frames: how many of the B frames to process.
        """
        cp = self.cp
        contiguous = prob.flags.c_contiguous and mask.flags.c_contiguous
        if not contiguous or taps.kx != 2 or taps.ky != 2:
            raise ValueError("postprocess needs contiguous prob/mask and bilinear (K=2) taps")
        h, w = mask.shape[-2:]
        grid = ((w * h + 255) // 256, frames)
        args = (prob, cp.int32(prob.shape[-1]),
                taps.x_index, taps.x_weight, cp.int32(w),
                taps.y_index, taps.y_weight, cp.int32(h),
                cp.float32(threshold), mask)
        with cp.cuda.Device(self._device_id), self._stream(stream):
            self._mask(grid, (256,), args)
