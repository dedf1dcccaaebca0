"""Int8 quantization: the attention blocks are found, and int8 masks agree with fp32 masks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from support.isic_runs import ISIC

from slsnet import build_generator
from slsnet.blocks import CAM, PAM
from slsnet.checkpoint import load_generator
from slsnet.data import find_pairs, read_rgb, resize_to_input, to_tensor
from slsnet.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from slsnet.onnx_quantize import (
    _scope_path,
    attention_nodes,
    calibration_batches,
    pick_calibration,
    quantize_int8,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "slsnet_isic2017.pt"
AGREEMENT = 0.995  # share of mask pixels an engine candidate must keep
VAL_IMAGES = 8


@pytest.mark.parametrize(("node", "path"), [
    ("/stem/cams.0/Softmax", "stem.cams.0"),
    ("/mid/mid.0/mid.0.1/Softmax", "mid.0.1"),
    ("/down1/down1.1/query/query.0/Conv", "down1.1.query.0"),
    ("/fork/pam/MultiHeadAttention", "fork.pam"),
    ("/Sigmoid", ""),
])
def test_scope_path_of_exported_node_names(node, path):
    assert _scope_path(node) == path


def test_attention_nodes_are_every_pam_and_cam_and_nothing_else():
    # given a random generator's export
    torch.manual_seed(0)
    generator = build_generator().eval()
    model = onnx.load_from_string(export_onnx(generator))
    # when
    names = set(attention_nodes(model, generator))
    # then: every fused attention and every CAM softmax, and no convolution outside them
    ops = [n for n in model.graph.node if n.name in names]
    pams = sum(isinstance(m, PAM) for m in generator.modules())
    cams = sum(isinstance(m, CAM) for m in generator.modules())
    assert sum(n.op_type == "MultiHeadAttention" for n in ops) == pams
    assert sum(n.op_type == "Softmax" for n in ops) == cams
    assert all(n.op_type != "Conv" or "/query/" in n.name or "/key/" in n.name
               or "/value/" in n.name for n in ops)


def _session(model: bytes):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


NEEDS_DATA = pytest.mark.skipif(not (ISIC / "val").is_dir() or not WEIGHTS.is_file(),
                                reason="needs the ISIC 2017 copy and the shipped weights")


@NEEDS_DATA
def test_selectable_cpu_engine_masks_agree_with_torch_on_validation_images():
    # given the shipped network in torch and as the ONNX Runtime engine runs it (fp32, fused
    # attention), the exact CPU engine (docs/benchmarks.md, "CPU engines"; the int8 form that
    # --runtime auto may choose is held to the same bar in tests/stream/engines/test_cpu_choice)
    generator = load_generator(str(WEIGHTS))
    pairs = find_pairs(ISIC / "val")[:VAL_IMAGES]
    size = generator.config.input_size
    x = to_tensor(np.stack([resize_to_input(read_rgb(p.image), size) for p in pairs]))
    # when
    with torch.inference_mode():
        ref = generator(x).numpy()
    (out,) = _session(export_onnx(generator)).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    # then: the masks a user sees are the same on at least 99.5 % of pixels
    threshold = generator.config.threshold
    agreement = float(np.mean((ref > threshold) == (out > threshold)))
    assert agreement >= AGREEMENT, f"masks agree on {100 * agreement:.2f} % of pixels"
    assert (ref > threshold).any()  # the comparison is not between empty masks


@NEEDS_DATA
def test_int8_model_quantizes_convolutions_and_keeps_attention_float():
    # given the shipped network, quantized on a few training images with attention kept fp32
    generator = load_generator(str(WEIGHTS))
    fp32 = export_onnx(generator)
    images = calibration_batches(pick_calibration(ISIC / "train", 4), generator.config.input_size)
    int8 = onnx.load_from_string(quantize_int8(fp32, generator, images))
    # then: convolutions outside attention read dequantized weights; attention ones do not
    dequantized = {o for n in int8.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in int8.graph.node if n.op_type == "Conv"]
    attention = set(attention_nodes(onnx.load_from_string(fp32), generator))
    inside = [c for c in convs if c.name in attention]
    outside = [c for c in convs if c.name not in attention]
    assert inside and outside
    assert all(c.input[1] in dequantized for c in outside)
    assert not any(c.input[1] in dequantized for c in inside)
