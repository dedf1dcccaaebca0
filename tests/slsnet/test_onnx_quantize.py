"""Int8 quantization: the attention blocks are found, and int8 masks agree with fp32 masks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from support.isic_runs import ISIC

from slsnet import build_generator
from slsnet.blocks import CAM, PAM
from slsnet.data import find_pairs, read_rgb, resize_to_input, to_tensor
from slsnet.export import load_generator
from slsnet.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from slsnet.onnx_quantize import _scope_path, attention_nodes, pick_calibration, quantize_int8

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


@pytest.mark.skipif(not (ISIC / "val").is_dir() or not WEIGHTS.is_file(),
                    reason="needs the ISIC 2017 copy and the shipped weights")
def test_int8_masks_agree_with_fp32_on_validation_images():
    # given the shipped network, exported and quantized on training images (attention in fp32)
    generator = load_generator(str(WEIGHTS))
    fp32 = export_onnx(generator)
    int8 = quantize_int8(fp32, generator, pick_calibration(ISIC / "train"))
    pairs = find_pairs(ISIC / "val")[:VAL_IMAGES]
    size = generator.config.input_size
    x = to_tensor(np.stack([resize_to_input(read_rgb(p.image), size) for p in pairs])).numpy()
    # when
    (ref,) = _session(fp32).run([OUTPUT_NAME], {INPUT_NAME: x})
    (out,) = _session(int8).run([OUTPUT_NAME], {INPUT_NAME: x})
    # then: the masks a user sees are the same on at least 99.5 % of pixels
    threshold = generator.config.threshold
    agreement = float(np.mean((ref > threshold) == (out > threshold)))
    assert agreement >= AGREEMENT, f"int8 masks agree on {100 * agreement:.2f} % of pixels"
    assert (ref > threshold).any()  # the comparison is not between empty masks
