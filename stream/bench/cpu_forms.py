"""The ONNX Runtime forms of the network that ``python -m stream.bench`` times on the CPU.

The exact engine (fused attention, and the plain standard-operator form for comparison) and
every form ``--runtime auto`` builds (:data:`stream.engines.cpu_choice.CANDIDATES`: int8, the
attention over pooled keys), each built as the engine builds it, calibrated on the bundled
images, and run in a session with the engine's settings and the bench's thread count. With
trained weights a note says which form ``--runtime auto`` runs here and why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from stream.engines.check_set import load_check_set
from stream.engines.cpu_choice import CANDIDATES, choose, run_of, verdict
from stream.engines.onnx_runtime import OnnxEngine

EXACT_MODE = "fp32 onnxruntime (the exact engine)"


@dataclass(frozen=True)
class Form:
    """One form: its row's mode and a batch-1 call on an N×3×S×S input.

    ``runs``: the form ``--runtime auto`` runs on this machine.
    """

    mode: str
    run: Callable[[torch.Tensor], np.ndarray]
    runs: bool = False


def onnx_forms(generator, *, untrained: bool, threads: int) -> tuple[list[Form], list[str]]:
    """The forms to time, and notes (the ``--runtime auto`` choice, or why there is none)."""
    exact, plain = (OnnxEngine(copy.deepcopy(generator), untrained=untrained, threads=threads,
                               attention=a) for a in ("ort", "plain"))
    plain_form = Form("fp32 onnxruntime, plain attention", plain.probabilities)
    if untrained:
        return ([Form(EXACT_MODE, exact.probabilities, runs=True), plain_form],
                ["random weights: the forms --runtime auto checks are not built"])
    images = load_check_set(exact.size)
    chooser = OnnxEngine(copy.deepcopy(generator), threads=threads)  # choose() switches it
    calls = {}  # each candidate's form → its batch-1 call
    for candidate in CANDIDATES:
        # a form that passed its check comes from the model cache, as the engine reads it; one
        # that failed is not kept there and is built here
        _, session = verdict(chooser, candidate, images)
        session = session or exact.session_of(
            candidate.build(exact.fp32_model(), exact.generator, images[0]))
        calls[candidate.form] = run_of(session)
    chosen = choose(chooser)  # every verdict is cached by now: nothing is built again
    forms = [Form(EXACT_MODE, exact.probabilities, runs=chosen.form == "fp32"), plain_form,
             *(Form(f"{form} onnxruntime (a --runtime auto form)",
                    lambda x, run=run: run(np.ascontiguousarray(x.numpy())),
                    runs=form == chosen.form) for form, run in calls.items())]
    return forms, [f"--runtime auto runs {chosen.name} here ({chosen.choice})"]


def cpu_targets(rows, runs: str | None) -> list[dict]:
    """The CPU target (issue: every frame through the network at 30 FPS on the CPU).

    Judged on the form ``--runtime auto`` runs on this machine (mode ``runs``; a faster form
    whose masks failed their check does not count), at batch 1: p50 ≤ 33.3 ms, the form named
    in the target's text.
    """
    found = [r for r in rows if r.section == "model" and r.mode == runs and r.batch == 1
             and r.p50_ms is not None]
    if not found:
        return []
    row = found[0]
    limit = 1e3 / 30
    return [{"target": f"network b1 p50 ms ≤ {limit:.1f} (30 FPS), the form --runtime auto "
                       f"runs: {row.mode}",
             "value": round(row.p50_ms, 4), "limit": round(limit, 1),
             "ok": bool(row.p50_ms <= limit)}]
