"""ONNX export of the generator, for ONNX Runtime on the CPU.

The exported graph computes exactly what the torch generator does, with one change of form:
every :class:`~slsnet.blocks.PAM` runs :meth:`~slsnet.blocks.PAM.attend_plain` (bmm → softmax →
bmm, scale 1) instead of the zero-padded fused attention, which on the CPU only multiplies the
QKᵀ work (docs/benchmarks.md, "The network alone on the CPU"). The change is made on a copy;
the generator passed in is left as it is.

Batch, height and width are dynamic axes. The graph is traced on a small input because the
TorchScript tracer runs every convolution at its slowest; the network is fully convolutional
and has no size-dependent branch, so the graph is the same at the size it later runs.

Needs the ``onnx`` package (``torch.onnx.export`` checks the model with it): ``pip install
".[cpu]"``. The exporter is torch's TorchScript one (``dynamo=False``): deprecated since torch
2.9, but the torch.export-based one needs onnxscript besides. Its DeprecationWarning and the
tracer's warning about the stem's shape comparison (which holds at every size) are silenced.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import warnings

import torch

from slsnet.blocks import PAM
from slsnet.generator import Generator

OPSET = 17
TRACE_SIZE = 16  # divisible by 8; the coarsest stem scale (1/8) still leaves 2×2 pixels
EXPORT_VERSION = 1  # bump whenever the exported graph changes: it is part of cache keys
INPUT_NAME, OUTPUT_NAME = "x", "prob"


def plain_copy(generator: Generator) -> Generator:
    """A deep copy of ``generator`` in eval mode whose PAMs use the plain attention form."""
    plain = copy.deepcopy(generator).eval()
    for module in plain.modules():
        if isinstance(module, PAM):
            module.plain = True
    return plain


def export_onnx(generator: Generator) -> bytes:
    """The generator as an ONNX model (opset :data:`OPSET`, float32).

    Args:
        generator: on the CPU; not modified.

    Returns:
        The serialised model: input ``x`` B×3×H×W normalised to [-1, 1], output ``prob``
        B×1×H×W probabilities; B, H and W are dynamic (H and W divisible by 8).
    """
    model = plain_copy(generator).float().cpu()
    dummy = torch.zeros(1, model.config.in_channels, TRACE_SIZE, TRACE_SIZE)
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # known and expected: see the module docstring
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
    return buffer.getvalue()


def weights_digest(generator: Generator) -> str:
    """SHA-256 of the generator's config and tensors (names, dtypes, shapes and values).

    The same weights give the same digest whether they come from a file, from a copy of that
    file, or from the seeded random initialisation, so it keys a cache of exported models.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(generator.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(generator.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
