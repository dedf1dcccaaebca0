"""The CUDA engine: CPU-side checks here, and (marked ``cuda``) the engine on a GPU against the
CPU engine, graph against eager, batches, the ring, size changes and the staging buffer.

Tolerances:
- fp16 engine vs the exact reference (the GPU path's own math in float32 on the CPU: unrounded
  resize, fp32 network): ``support.half.fp16_tolerance`` of the frames, FP16_ROUNDINGS times the
  change one fp16 rounding of inputs and weights makes (0.035 on the 1080p frames, 0.074 on the
  640×360 ones with the shipped weights); checked on the CPU's half precision in CI;
- vs the CPU engine, masks only, agreeing on ≥ 99.5 % of pixels: it rounds its resized pixels to
  uint8 as OpenCV does and the GPU does not, which alone moves probabilities by up to 0.024;
- fp32 engine (TF32 off) vs the exact reference: ≤ 1e-3 and ≥ 99.9 %; graph vs eager at equal
  shapes: ≤ 1e-3 and ≥ 99.9 %.
"""

import copy
import sys
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from support.half import fp16_tolerance
from support.nets import centre_head

from slsnet import build_generator
from stream.engines.resample import mask_reference, preprocess_reference
from stream.frame import Frame


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
    from stream.engines import find_default_weights, load_weights

    gen, untrained, _ = load_weights(find_default_weights())
    if untrained:
        centre_head(gen, torch.from_numpy(preprocess_reference(make_frame((640, 480)).image, 128)))
    return gen.eval()


def cpu_reference(generator, frames):
    """The CPU engine's results (OpenCV resize rounded to uint8, fp32 network)."""
    from stream.engines import CpuEngine

    out = [Frame(f.image, f.index, f.pts, f.time_base, 0.0) for f in frames]
    CpuEngine(generator, precision="fp32", channels_last=False).infer(out)
    return out


def network_input(generator, frames):
    """The N×3×S×S input the GPU path computes (unrounded resize), on the CPU."""
    size = generator.config.input_size
    return torch.from_numpy(np.concatenate([preprocess_reference(f.image, size) for f in frames]))


def exact_reference(generator, frames, net=None):
    """The GPU path's own math on the CPU: unrounded reference preprocessing, fp32 network
    (or ``net``, e.g. the generator in half precision)."""
    thr = generator.config.threshold
    x = network_input(generator, frames)
    with torch.inference_mode():
        if net is None:
            probs = generator(x)[:, 0].numpy()
        else:
            x = x.to(next(net.parameters()).dtype).contiguous(memory_format=torch.channels_last)
            probs = net(x)[:, 0].float().numpy()
    out = []
    for f, prob in zip(frames, probs, strict=True):
        out.append(Frame(f.image, f.index, f.pts, f.time_base, 0.0, prob=prob,
                         mask=mask_reference(prob, f.size_wh, thr)))
    return out


def assert_close(frames, refs, *, prob_tol, agree):
    for f, r in zip(frames, refs, strict=True):
        assert f.mask.shape == r.mask.shape and f.mask.dtype == np.uint8
        assert f.prob.shape == r.prob.shape and f.prob.dtype == np.float32
        gap = np.abs(f.prob - r.prob).max()
        assert gap <= prob_tol, f"frame {f.index}: {gap:.4f} > {prob_tol:.4f}"
        assert_masks_agree([f], [r], agree)


def assert_masks_agree(frames, refs, agree):
    for f, r in zip(frames, refs, strict=True):
        share = (f.mask == r.mask).mean()
        assert share >= agree, f"frame {f.index}: masks agree on {share:.4%}"


def test_fp16_tolerances_hold_for_half_precision_on_the_cpu(generator):
    # given the GPU tests' most sensitive frames (largest fp16 gap at 1080p; 640×360 frame 4)
    frames = [make_frame((1920, 1080), 1), make_frame((640, 360), 4)]
    half = copy.deepcopy(generator).half().to(memory_format=torch.channels_last)
    for frame in frames:
        # when the network runs in half precision (fp16 storage, float32 sums) on the CPU
        got = exact_reference(generator, [frame], net=half)
        # then it is within the fp16 tolerance of the exact result, and its mask agrees with the
        # CPU engine's (which rounds its resized pixels to uint8) as the GPU tests require
        tol = fp16_tolerance(generator, network_input(generator, [frame]))
        assert_close(got, exact_reference(generator, [frame]), prob_tol=tol, agree=0.995)
        assert_masks_agree(got, cpu_reference(generator, [frame]), 0.995)


def test_engine_cuda_imports_without_cupy_and_refuses_the_cpu():
    from stream.engines import cuda as engine_cuda

    assert "cupy" not in sys.modules
    with pytest.raises(RuntimeError, match="CUDA"):
        engine_cuda.CudaEngine(build_generator(), device=torch.device("cpu"))


def test_chunks_cut_by_batch_and_by_frame_size():
    from stream.engines.cuda_ring import chunks

    frames = [make_frame((64, 48) if i < 5 else (32, 24), i) for i in range(8)]
    out = chunks(frames, 2)
    assert [[f.index for f in c] for c in out] == [[0, 1], [2, 3], [4], [5, 6], [7]]


def test_graph_sizes_let_a_short_batch_compute_little_more_than_itself():
    from stream.engines.cuda_ring import graph_for, graph_sizes

    assert graph_sizes(1) == [1] and graph_sizes(3) == [1, 2, 3]
    assert graph_sizes(8) == [1, 2, 4, 8] and graph_sizes(12) == [1, 2, 4, 8, 12]
    sizes = graph_sizes(8)
    assert [graph_for(n, sizes) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]


def test_resolve_precision():
    from stream.engines import EngineError
    from stream.engines.cuda import resolve_precision

    assert resolve_precision("auto") == "fp16" and resolve_precision("bf16") == "bf16"
    with pytest.raises(EngineError, match="unknown precision"):
        resolve_precision("int8")


@pytest.mark.cuda
def test_engine_fp32_matches_the_cpu_path(generator, monkeypatch):
    from stream.engines.cuda import CudaEngine

    # TF32 convolutions would add ~1e-3 relative error; this test checks the pipeline's math
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    frames = [make_frame((1280, 720), i) for i in range(3)]
    engine = CudaEngine(generator, device=torch.device("cuda"), precision="fp32", cuda_graph=False)
    engine.infer(frames)
    # the same math on the CPU: equal up to float rounding
    assert_close(frames, exact_reference(generator, frames), prob_tol=1e-3, agree=0.999)
    # the CPU engine (which rounds its resized pixels to uint8): the same masks
    assert_masks_agree(frames, cpu_reference(generator, frames), 0.995)
    assert all(f.timings["infer"] > 0 and f.timings["preprocess"] > 0 for f in frames)


@pytest.mark.cuda
@pytest.mark.parametrize("kernels", ["cupy", "torch"])
def test_engine_fp16_graph_matches_the_cpu_engine(generator, kernels):
    from stream.engines import Engine
    from stream.engines.cuda import CudaEngine

    frames = [make_frame((1920, 1080), i) for i in range(4)]
    engine = CudaEngine(generator, device=torch.device("cuda"), kernels=kernels)
    assert isinstance(engine, Engine) and engine.name.startswith("cuda fp16 graph")
    engine.infer(frames)
    tol = fp16_tolerance(generator, network_input(generator, frames))
    assert_close(frames, exact_reference(generator, frames), prob_tol=tol, agree=0.995)
    assert_masks_agree(frames, cpu_reference(generator, frames), 0.995)


@pytest.mark.cuda
def test_graph_equals_eager(generator):
    from stream.engines.cuda import CudaEngine

    dev = torch.device("cuda")
    graph = [make_frame((1920, 1080), i) for i in range(4)]
    eager = [make_frame((1920, 1080), i) for i in range(4)]
    CudaEngine(generator, device=dev).infer(graph)
    CudaEngine(generator, device=dev, cuda_graph=False).infer(eager)
    assert_close(graph, eager, prob_tol=1e-3, agree=0.999)


@pytest.mark.cuda
def test_batches_and_ring_keep_frames_apart(generator):
    from stream.engines.cuda import CudaEngine

    # given 7 distinct frames: batches of 3 (the last one padded) through a ring of 2 slots
    dev = torch.device("cuda")
    frames = [make_frame((640, 360), i) for i in range(7)]
    single = [make_frame((640, 360), i) for i in range(7)]
    CudaEngine(generator, device=dev, cuda_graph=False).infer(single)  # one frame at a time
    # when
    CudaEngine(generator, device=dev, batch=3, ring=2).infer(frames)
    # then every frame got its own result (other batch shapes: other cuDNN kernels, fp16 noise)
    tol = fp16_tolerance(generator, network_input(generator, frames))
    exact = exact_reference(generator, frames)
    assert_close(frames, exact, prob_tol=tol, agree=0.995)
    assert_close(single, exact, prob_tol=tol, agree=0.995)
    for i, f in enumerate(frames):
        own = np.abs(f.prob - single[i].prob).mean()
        assert all(own < np.abs(f.prob - s.prob).mean() for j, s in enumerate(single) if j != i)


@pytest.mark.cuda
def test_submit_collect_overlap_and_size_changes(generator):
    from stream.engines.cuda import CudaEngine

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
    from stream.engines.cuda import CudaEngine

    engine = CudaEngine(generator, device=torch.device("cuda"))
    a = make_frame((1920, 1080), 3)
    buf = engine.staging_buffer((1920, 1080))
    buf[...] = a.image
    b = Frame(buf, 3, 3, Fraction(1, 30), 0.0)
    engine.infer([b])
    engine.infer([a])
    assert np.array_equal(a.mask, b.mask) and np.array_equal(a.prob, b.prob)


@pytest.mark.cuda
def test_mirror_mean_on_the_gpu_matches_it_on_the_cpu(generator):
    # the mean of four maps is within the largest of their four gaps: the same mask agreement
    # as one frame through the CUDA and the CPU engines
    from stream.engines import CpuEngine
    from stream.engines.cuda import CudaEngine
    from stream.engines.mirror import MirrorEngine

    gpu = [make_frame((640, 360), i) for i in range(2)]
    cpu = [Frame(f.image, f.index, f.pts, f.time_base, 0.0) for f in gpu]
    engine = MirrorEngine(CudaEngine(generator, device=torch.device("cuda"), batch=8))
    engine.prepare((640, 360))  # the pipeline's call: the inner engine's graphs, built now
    engine.infer(gpu)
    engine.close()
    MirrorEngine(CpuEngine(copy.deepcopy(generator), precision="fp32")).infer(cpu)
    assert all(f.prob.shape == (128, 128) and f.prob.dtype == np.float32 for f in gpu)
    assert_masks_agree(gpu, cpu, 0.995)
