"""ONNX export of the generator, for ONNX Runtime on the CPU (and other runtimes).

``python -m slsnet.onnx_export --weights PATH --out MODEL.onnx [--attention ort|plain]
[--pool 1|2|4]`` writes one; :mod:`stream.engine_onnx` exports and caches its own.

The exported graph computes exactly what the torch generator does, with one change of form:
every :class:`~slsnet.blocks.PAM` attends on its unpadded queries and keys instead of the
zero-padded fused call, which on the CPU only multiplies the QKᵀ work. Two forms
(:data:`ATTENTIONS`; docs/benchmarks.md, "Speed on the CPU"):

- ``"ort"`` (default): one ``com.microsoft.MultiHeadAttention`` node per PAM (1 head,
  ``scale`` 1), which ONNX Runtime's CPU provider runs as a tiled flash attention that never
  materialises the N×N map: the network runs 1.3–1.7× faster than with ``"plain"`` (1 and 2
  threads, this 2-core CPU). ONNX Runtime only.
- ``"plain"``: MatMul → Softmax → MatMul in standard ONNX operators, for any runtime.

``pool`` 2 or 4 (``--pool``) exports an approximation instead: the two PAMs over the largest
maps attend to keys and values averaged over pool×pool cells (:func:`export_copy`), 1.7–2×
faster on a 2-core CPU; ``--runtime auto`` uses such a form only where its masks match the
exact network's (:mod:`stream.engines.cpu_choice`).

The change is made on a copy; the generator passed in is left as it is.

Batch, height and width are dynamic axes. The graph is traced on a small input because the
TorchScript tracer runs every convolution at its slowest; the network is fully convolutional
and has no size-dependent branch, so the graph is the same at the size it later runs.

Needs the ``onnx`` package (``torch.onnx.export`` checks the model with it): ``pip install
".[cpu]"``. The exporter is torch's TorchScript one (``dynamo=False``): deprecated since torch
2.9, but the torch.export-based one needs onnxscript besides. Its DeprecationWarning and the
tracer's warning about the stem's shape comparison (which holds at every size) are silenced.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from slsnet.blocks import PAM, plain_attention
from slsnet.checkpoint import WeightsError, load_generator
from slsnet.generator import Generator

OPSET = 17
TRACE_SIZE = 16  # divisible by 8; the coarsest stem scale (1/8) still leaves 2×2 pixels
EXPORT_VERSION = 2  # bump whenever the exported graph changes: it is part of cache keys
INPUT_NAME, OUTPUT_NAME = "x", "prob"
MS_DOMAIN = "com.microsoft"


class OrtAttention(torch.autograd.Function):
    """:func:`~slsnet.blocks.plain_attention` in torch; ONNX Runtime's MultiHeadAttention in ONNX.

    Inputs B×N×C' queries and keys, B×N×C values (one head: the hidden sizes are the head
    sizes, which may differ between keys and values); ``scale`` 1 as in the paper.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same attention in torch (what the tracer runs)."""
        return plain_attention(q, k, v)

    @staticmethod
    def symbolic(g, q, k, v):  # noqa: D102  (the exporter's hook)
        out = g.op(f"{MS_DOMAIN}::MultiHeadAttention", q, k, v, num_heads_i=1, scale_f=1.0)
        out.setType(v.type())  # B×N×C, like the values: the exporter cannot infer it
        return out


ATTENTIONS = {"ort": OrtAttention.apply, "plain": plain_attention}
POOLS = (1, 2, 4)  # export_copy's pool: exact, or keys averaged over 2×2 or 4×4 cells


def largest_maps(generator: Generator) -> list[PAM]:
    """The PAMs that attend over the largest maps (the most positions) in ``generator``.

    Found by running it on a :data:`TRACE_SIZE` input: the network is fully convolutional, so
    which PAMs see the largest maps does not depend on the input size.
    """
    sizes: dict[PAM, int] = {}

    def record(module, inputs):
        sizes[module] = inputs[0].shape[-2] * inputs[0].shape[-1]

    pams = [m for m in generator.modules() if isinstance(m, PAM)]
    hooks = [m.register_forward_pre_hook(record) for m in pams]
    try:
        with torch.no_grad():
            generator(torch.zeros(1, generator.config.in_channels, TRACE_SIZE, TRACE_SIZE))
    finally:
        for hook in hooks:
            hook.remove()
    largest = max(sizes.values(), default=0)
    return [m for m in pams if sizes.get(m) == largest]


def export_copy(generator: Generator, attention: str = "ort", pool: int = 1) -> Generator:
    """A deep copy of ``generator`` in eval mode whose PAMs use ``attention``.

    Args:
        generator: not modified.
        attention: a key of :data:`ATTENTIONS`.
        pool: 1 (exact), or the PAMs on the largest maps (:func:`largest_maps`: at 128×128 the
            two over 64×64 = 4 096 positions, most of the CPU time) attend to keys and values
            averaged over pool×pool cells (:class:`~slsnet.blocks.PAM`): an approximation.
            Those maps are H/2 × W/2 and H and W are divisible by 8, so ``pool`` may be 2 or 4.
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {sorted(ATTENTIONS)}, not {attention!r}")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, not {pool!r}")
    exported = copy.deepcopy(generator).eval()
    for module in exported.modules():
        if isinstance(module, PAM):
            module.attention = ATTENTIONS[attention]
    for module in largest_maps(exported) if pool > 1 else ():
        module.pool = pool
    return exported


def export_onnx(generator: Generator, *, attention: str = "ort", pool: int = 1) -> bytes:
    """The generator as an ONNX model (opset :data:`OPSET`, float32).

    Args:
        generator: on the CPU; not modified.
        attention: ``"ort"`` (ONNX Runtime's fused kernel) or ``"plain"`` (standard operators
            only): see the module docstring.
        pool: 1 for the exact network; 2 or 4 for the approximate attention of
            :func:`export_copy`.

    Returns:
        The serialised model: input ``x`` B×3×H×W normalised to [-1, 1], output ``prob``
        B×1×H×W probabilities; B, H and W are dynamic (H and W divisible by 8).
    """
    model = export_copy(generator, attention, pool).float().cpu()
    dummy = torch.zeros(1, model.config.in_channels, TRACE_SIZE, TRACE_SIZE)
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # known and expected: see the module docstring
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                          custom_opsets={MS_DOMAIN: 1} if attention == "ort" else None)
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


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    A reader, or a crash, never sees half a model. Creates the folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Export weights to an ONNX file; one error line and exit 2 on a bad input."""
    parser = argparse.ArgumentParser(prog="python -m slsnet.onnx_export",
                                     description="Export SLSNet weights to an ONNX model.")
    parser.add_argument("--weights", help="generator weights (default: the shipped ones)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--attention", default="ort", choices=sorted(ATTENTIONS),
                        help="ort: ONNX Runtime's fused attention (fastest, ONNX Runtime only); "
                             "plain: standard operators, for any runtime (default: ort)")
    parser.add_argument("--pool", type=int, default=1, choices=POOLS,
                        help="1: the exact network (default); 2 or 4: the two largest attention "
                             "maps attend to keys averaged over 2×2 or 4×4 cells, a faster "
                             "approximation (docs/benchmarks.md, 'Speed on the CPU')")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        import onnx  # noqa: F401  (torch.onnx.export checks the model with it)
    except ImportError:
        print('error: the ONNX export needs the onnx package: pip install ".[cpu]"',
              file=sys.stderr)
        return 2
    try:
        if not out.parent.is_dir():
            raise OSError(f"no such folder: {out.parent}")
        model = export_onnx(load_generator(args.weights), attention=args.attention,
                            pool=args.pool)
        write_atomically(out, model)
    except (WeightsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runtime = "ONNX Runtime only" if args.attention == "ort" else "standard operators"
    pooled = f", keys pooled {args.pool}×{args.pool} in the largest maps" if args.pool > 1 else ""
    print(f"wrote {out} ({len(model) / 1e6:.1f} MB, opset {OPSET}, attention {args.attention}: "
          f"{runtime}{pooled}); input {INPUT_NAME!r} B×3×H×W in [-1, 1], output "
          f"{OUTPUT_NAME!r} B×1×H×W")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
