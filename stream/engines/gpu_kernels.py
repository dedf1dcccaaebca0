"""The CUDA engine's preprocessing and mask resizing: one CuPy RawKernel each way.

They compute the taps of ``resample`` (whose numpy references define the results), launched on
torch's streams over CuPy views of torch tensors. CuPy is imported only when
:class:`CupyKernels` is built, so this module imports on a machine without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stream.engines.resample import NORM_BIAS, NORM_SCALE, Taps

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
