"""``python -m stream.bench.cpu_engines``: CPU engine candidates for the network, in one run.

Times the network call (batch 1, S×S input, preprocessing excluded) of each candidate, called
in turn so that all see the same load, and scores each against the fp32 torch engine on the
validation images: the share of mask pixels (at the network size, threshold 0.5) that agree,
and the change of the mean JSC (predictions resized to each ground truth's size).

Candidates: torch eager fp32 (channels_last); ONNX Runtime fp32 as the ``onnx`` runtime runs it
(fused attention, all graph optimizations) at 2 and 1 threads and with basic optimizations
only; ONNX Runtime int8 static quantization (:mod:`slsnet.onnx_quantize`) with 8-bit and 7-bit
weights, the attention blocks (and the stem and decoder) in fp32 or everything quantized, and
the int8 form ``--runtime auto`` builds (:mod:`stream.engines.cpu_choice`, calibrated on the
bundled images); OpenVINO fp32 and int8 where ``openvino`` is installed (standard-operator
attention: it lacks ONNX Runtime's fused kernel). ``--rows auto``: the references and every
form ``--runtime auto`` builds (int8, and the attention over pooled keys).

Each candidate is timed in blocks of calls (:func:`stream.timing.alternating`), so that
no candidate is timed beside the previous one's spinning worker threads.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slsnet.data import find_pairs, read_mask, read_rgb, resize_to_input, to_tensor
from slsnet.device import cpu_flags, cpu_name
from slsnet.inference import resize_prob
from slsnet.metrics import MetricAccumulator
from slsnet.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from slsnet.onnx_quantize import calibration_batches, pick_calibration, quantize_int8
from stream.engines.base import load_weights
from stream.engines.check_set import load_check_set
from stream.engines.cpu_choice import CANDIDATES
from stream.timing import alternating

Run = Callable[[np.ndarray], np.ndarray]  # 1×3×S×S float32 → 1×S×S probabilities


@dataclass
class Candidate:
    """One engine form: how it runs and what it was built with."""

    name: str
    settings: str
    run: Run


VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                "amx_int8")  # what int8 and bf16 kernels can use


def ort_session(model: bytes, threads: int, level: str = "all") -> Run:
    """An ONNX Runtime CPU session as :class:`Run`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][:, 0]


def openvino_model(model: bytes, threads: int) -> Run:
    """An OpenVINO CPU compiled model (latency hint) as :class:`Run`."""
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="slsnet-ov-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        Path(path).write_bytes(model)
        compiled = core.compile_model(core.read_model(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda x: request.infer([x])[0][:, 0]


def torch_run(generator, threads: int) -> Run:
    """The torch eager fp32 channels_last engine as :class:`Run`."""
    torch.set_num_threads(threads)
    model = generator.eval().to(memory_format=torch.channels_last)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            return model(t)[:, 0].numpy()

    return run


def reference_candidates(generator, fused: bytes, threads: int) -> list[Candidate]:
    """Torch fp32 (the mask reference) and the exact ONNX Runtime engine at ``threads`` and 1."""
    return [
        Candidate("torch fp32 channels_last", f"torch.set_num_threads({threads})",
                  torch_run(generator, threads)),
        Candidate("ORT fp32 (the exact engine)", f"{threads} threads, ENABLE_ALL, sequential",
                  ort_session(fused, threads)),
        Candidate("ORT fp32 (the exact engine)", "1 thread, ENABLE_ALL", ort_session(fused, 1)),
    ]


def auto_candidates(generator, fused: bytes, threads: int, forms=CANDIDATES) -> list[Candidate]:
    """``forms`` (default: every one ``--runtime auto`` checks), built as it builds them."""
    bundled, _ = load_check_set(generator.config.input_size)
    out = []
    for form in forms:
        model = form.build(fused, generator, bundled)
        out += [Candidate(f"ORT {form.form} (a --runtime auto form)",
                          f"{k} thread{'s' if k > 1 else ''}, ENABLE_ALL", ort_session(model, k))
                for k in sorted({threads, 1}, reverse=True)]
    return out


def build_candidates(generator, calibration: list[Path], threads: int,
                     rows: str = "all") -> list[Candidate]:
    """Every candidate this machine can run (OpenVINO only where installed).

    ``rows="all"``: besides the int8 variants, every other ``--runtime auto`` form, ORT's basic
    optimizations and OpenVINO (fp32, int8, fp32 pool4);
    ``rows="int8"``: the references (torch and ORT fp32) and the ORT int8 forms only;
    ``rows="auto"``: the references and every form ``--runtime auto`` builds, at ``threads``
    and at 1 thread.
    """
    fused = export_onnx(generator, attention="ort")
    if rows == "auto":
        return reference_candidates(generator, fused, threads) + auto_candidates(
            generator, fused, threads)
    plain = export_onnx(generator, attention="plain")
    t0 = time.perf_counter()
    images = list(calibration_batches(calibration, generator.config.input_size))
    int8_attn_fp32 = quantize_int8(fused, generator, images, keep_attention=True)
    int8_all = quantize_int8(fused, generator, images, keep_attention=False)
    int8_plain = quantize_int8(plain, generator, images, keep_attention=True)
    s7 = quantize_int8(fused, generator, images, reduce_range=True)
    s7_decoder = quantize_int8(fused, generator, images, reduce_range=True,
                               keep=("stem", "up1", "up2"))
    s7_all = quantize_int8(fused, generator, images, keep_attention=False, reduce_range=True)
    bundled, _ = load_check_set(generator.config.input_size)
    (auto,) = [c for c in CANDIDATES if c.form == "int8"]
    s7_auto = auto.build(fused, generator, bundled)
    print(f"quantized 7 models in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t = f"{threads} threads"
    out = reference_candidates(generator, fused, threads)
    if rows == "all":
        out.append(Candidate("ORT fp32", f"{t}, ENABLE_BASIC", ort_session(fused, threads,
                                                                          "basic")))
    out += [
        Candidate("ORT int8 QDQ, attention fp32", f"{t}, ENABLE_ALL",
                  ort_session(int8_attn_fp32, threads)),
        Candidate("ORT int8 QDQ, attention fp32", "1 thread, ENABLE_ALL",
                  ort_session(int8_attn_fp32, 1)),
        Candidate("ORT int8 QDQ, all convs", f"{t}, ENABLE_ALL", ort_session(int8_all, threads)),
        Candidate("ORT int8 QDQ 7-bit weights, attention fp32", f"{t}, ENABLE_ALL",
                  ort_session(s7, threads)),
        Candidate("ORT int8 QDQ 7-bit weights, attention fp32", "1 thread, ENABLE_ALL",
                  ort_session(s7, 1)),
        Candidate("ORT int8 QDQ 7-bit weights, attention + stem + decoder fp32", f"{t}, ENABLE_ALL",
                  ort_session(s7_decoder, threads)),
        Candidate("ORT int8 QDQ 7-bit weights, all convs", f"{t}, ENABLE_ALL",
                  ort_session(s7_all, threads)),
        Candidate("ORT int8 as --runtime auto builds it (as above, 16 bundled calibration "
                  "images)", f"{t}, ENABLE_ALL", ort_session(s7_auto, threads)),
        Candidate("ORT int8 as --runtime auto builds it", "1 thread, ENABLE_ALL",
                  ort_session(s7_auto, 1)),
    ]
    if rows != "all":
        return out
    out += auto_candidates(generator, fused, threads,  # the int8 ones are above already
                           [c for c in CANDIDATES if not c.form.startswith("int8")])
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("openvino is not installed: its candidates are skipped", file=sys.stderr)
    else:
        plain_pool4 = export_onnx(generator, attention="plain", pool=4)
        out.append(Candidate("OpenVINO fp32 (plain attention)", f"{t}, LATENCY hint",
                             openvino_model(plain, threads)))
        out.append(Candidate("OpenVINO int8 QDQ, attention fp32", f"{t}, LATENCY hint",
                             openvino_model(int8_plain, threads)))
        out.append(Candidate("OpenVINO fp32 pool4 (plain attention)", f"{t}, LATENCY hint",
                             openvino_model(plain_pool4, threads)))
    return out


def score(run: Run, inputs: list[np.ndarray], truths: list[np.ndarray], threshold: float
          ) -> tuple[list[np.ndarray], float]:
    """Network-size masks of every input and the mean JSC against the full-size truths."""
    masks, acc = [], MetricAccumulator()
    for x, truth in zip(inputs, truths, strict=True):
        prob = run(x)[0]
        masks.append(prob > threshold)
        acc.update(resize_prob(prob, (truth.shape[1], truth.shape[0])) > threshold, truth)
    return masks, acc.mean()["jsc"]


def main(argv: list[str] | None = None) -> int:
    """Build, score and time every candidate; print a markdown table."""
    parser = argparse.ArgumentParser(prog="python -m stream.bench.cpu_engines",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/isic2017",
                        help="ISIC folder with train/ (calibration) and val/ (scores)")
    parser.add_argument("--weights", help="generator weights (default: the shipped ones)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=64, help="training images")
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rows", choices=("all", "int8", "auto"), default="all",
                        help="int8: only the references and the ONNX Runtime int8 forms; auto: "
                        "the references and every form --runtime auto builds (for both, torch "
                        "is scored but not timed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = Path(args.data)
    try:
        generator, _, source = load_weights(args.weights)
        calibration = pick_calibration(data / "train", args.calibration)
        pairs = find_pairs(data / "val")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size, threshold = generator.config.input_size, float(generator.config.threshold)
    inputs = [to_tensor(resize_to_input(read_rgb(p.image), size)[None]).numpy() for p in pairs]
    truths = [read_mask(p.mask) for p in pairs]
    candidates = build_candidates(generator, calibration, args.threads, args.rows)

    scored = [score(c.run, inputs, truths, threshold) for c in candidates]
    ref_masks, ref_jsc = scored[0]
    x = inputs[0]
    # --rows int8 and auto time the ONNX Runtime forms only (torch is their mask reference)
    timed = candidates if args.rows == "all" else candidates[1:]
    ms = alternating([lambda c=c: c.run(x) for c in timed], args.warmup, args.iters)
    ms = ms if args.rows == "all" else [[float("nan")], *ms]
    p50_ort = float(np.median(ms[1]))

    print(f"{len(pairs)} val images, {len(calibration)} calibration images, weights {source}; "
          f"batch 1, {size}×{size}; CPU {cpu_name()} "
          f"({', '.join(cpu_flags(VECTOR_FLAGS))}), {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.2f}")
    print("\n| engine | settings | p50 ms | FPS | vs ORT fp32 | mask agreement % | val JSC Δ |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for c, t, (masks, jsc) in zip(candidates, ms, scored, strict=True):
        p50 = float(np.median(t))
        agree = 100 * float(np.mean([np.mean(a == b) for a, b in zip(masks, ref_masks,
                                                                        strict=True)]))
        speed = ("- | - | -" if np.isnan(p50) else
                 f"{p50:.1f} | {1e3 / p50:.1f} | {p50_ort / p50:.2f}×")
        print(f"| {c.name} | {c.settings} | {speed} | {agree:.3f} | {jsc - ref_jsc:+.4f} |")
    print(f"\nreference: torch fp32, val JSC {ref_jsc:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
