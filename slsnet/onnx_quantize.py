"""Int8 static quantization of the exported generator, for ONNX Runtime on the CPU.

:func:`quantize_int8` turns the float32 model of :func:`slsnet.onnx_export.export_onnx` into a
QDQ model whose convolutions run in int8: weights per output channel, activations with ranges
calibrated on training images (min/max, or a percentile of each activation's histogram).
Attention blocks (every PAM and CAM, with their query, key and value convolutions) can be kept
in float32 (``keep_attention``), since their softmax inputs are where an 8-bit range costs the
most, and so can any other top-level block (``keep``, e.g. the decoder). ``reduce_range``
quantizes weights to 7 bits: on x86 CPUs without VNNI, ONNX Runtime multiplies uint8 by int8
with an instruction (VPMADDUBSW) whose 16-bit sums can saturate with full 8-bit weights.

Needs ``onnx`` and ``onnxruntime`` (``pip install ".[cpu]"``), imported only when called.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from slsnet.blocks import CAM, PAM
from slsnet.data import read_rgb, resize_to_input, to_tensor
from slsnet.generator import Generator
from slsnet.onnx_export import INPUT_NAME

CALIBRATION_IMAGES = 64
QUANTIZED_OPS = ("Conv",)
CALIBRATIONS = ("minmax", "percentile")


def calibration_batches(paths: Sequence[Path], size: int) -> Iterator[np.ndarray]:
    """1×3×S×S float32 network inputs of ``paths`` (RGB image files), one at a time."""
    for path in paths:
        small = resize_to_input(read_rgb(path), size)
        yield to_tensor(small[None]).numpy()


def pick_calibration(folder: str | Path, n: int = CALIBRATION_IMAGES) -> list[Path]:
    """``n`` images spread evenly over the sorted files of ``folder`` (``images/`` inside it)."""
    root = Path(folder)
    images = root / "images" if (root / "images").is_dir() else root
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"no calibration images in {images}")
    step = max(1, len(files) // n)
    return files[::step][:n]


def _scope_path(node_name: str) -> str:
    """The module path (``mid.0.1.query``) of an exported node named ``/mid/mid.0/mid.0.1/...``.

    The exporter names each scope by the module's name relative to a containing scope, which
    sometimes repeats the containing scope's name (``mid`` → ``mid.0``) and sometimes does not
    (``stem`` → ``cams.0``).
    """
    path = ""
    for seg in node_name.strip("/").split("/")[:-1]:  # the last part names the operator
        if not path:
            path = seg
            continue
        parts = path.split(".")
        for i in range(len(parts)):  # the longest suffix of path that seg starts with
            suffix = ".".join(parts[i:])
            if seg == suffix or seg.startswith(suffix + "."):
                path = ".".join(parts[:i] + [seg])
                break
        else:
            path = f"{path}.{seg}"
    return path


def attention_nodes(model, generator: Generator) -> list[str]:
    """Names of the nodes of ``model`` (an ``onnx.ModelProto``) inside a PAM or CAM."""
    blocks = [name for name, m in generator.named_modules() if isinstance(m, (PAM, CAM))]
    return nodes_inside(model, blocks)


def nodes_inside(model, blocks: Sequence[str]) -> list[str]:
    """Names of the nodes of ``model`` inside the modules named ``blocks`` (``up1``, ``mid.0``)."""
    names = []
    for node in model.graph.node:
        path = _scope_path(node.name)
        if any(path == b or path.startswith(b + ".") for b in blocks):
            names.append(node.name)
    return names


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of inputs."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(
    model_fp32: bytes,
    generator: Generator,
    calibration: Iterable[np.ndarray],
    *,
    keep_attention: bool = True,
    keep: Sequence[str] = (),
    calibrate: str = "minmax",
    reduce_range: bool = False,
) -> bytes:
    """The int8 QDQ form of ``model_fp32``.

    Args:
        model_fp32: from :func:`slsnet.onnx_export.export_onnx` of ``generator``.
        generator: the network exported (its module names locate the blocks kept float).
        calibration: 1×3×S×S float32 network inputs whose activations set the int8 ranges
            (:func:`calibration_batches` reads them from image files).
        keep_attention: leave every PAM and CAM in float32.
        keep: module names of further blocks left in float32 (``"up1"``, ``"stem"``).
        calibrate: ``"minmax"`` (each activation's full range) or ``"percentile"`` (99.999 %
            of its histogram: rare outliers clipped, finer steps for the rest).
        reduce_range: 7-bit weights (see the module docstring).

    Returns:
        The serialised quantized model, with the same input and output as ``model_fp32``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibrate not in CALIBRATIONS:
        raise ValueError(f"calibrate must be one of {CALIBRATIONS}, not {calibrate!r}")
    model = onnx.load_from_string(model_fp32)
    exclude = attention_nodes(model, generator) if keep_attention else []
    exclude += nodes_inside(model, keep)
    method = {"minmax": CalibrationMethod.MinMax,
              "percentile": CalibrationMethod.Percentile}[calibrate]
    with tempfile.TemporaryDirectory(prefix="slsnet-quant-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, src)
        quantize_static(src, dst, _Reader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=exclude,
                        calibrate_method=method)
        return Path(dst).read_bytes()
