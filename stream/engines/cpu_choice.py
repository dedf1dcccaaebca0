"""``--runtime auto`` on the CPU: the fastest form of the network that keeps the fp32 masks.

The exact engine is ONNX Runtime fp32 (:class:`~stream.engines.onnx_runtime.OnnxEngine`). Each
:class:`Candidate` is a faster form of the same weights (:data:`CANDIDATES`: int8 static
quantization; the two largest attention maps over keys averaged in 2×2 or 4×4 cells; both), an
approximation that runs only where its masks match the exact network's. The
first start with given weights builds every candidate from the fp32 model, calibrated on the
bundled training images (:mod:`stream.engines.check_set`), and checks it: its masks must agree
with the fp32 engine's on at least :data:`AGREEMENT` of the pixels of the bundled validation
images. A candidate that passes is timed against fp32 on this machine. The verdict (agreement,
times) is recorded beside the model in the model cache (:mod:`stream.engines.model_cache`),
keyed by the weights, the library versions, the candidate's settings and the CPU's vector
instructions (int8 kernels differ with them), so later starts only read it.

:func:`choose` then runs the fastest form that passed (fp32 when none did) and says why in one
line, ``engine.choice``: e.g. ``int8: 98.5 % mask agreement < 99.5 % on 16 bundled images, not
used``. Random (untrained) weights are never checked: their masks mean nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slsnet.device import cpu_flags
from slsnet.generator import Generator
from slsnet.onnx_export import EXPORT_VERSION, INPUT_NAME, OUTPUT_NAME, export_onnx
from slsnet.onnx_quantize import quantize_int8
from stream.engines.check_set import CHECK_SET, load_check_set
from stream.engines.model_cache import load_or_build, read_record, record_bytes, update_record
from stream.engines.onnx_runtime import OnnxEngine, cache_key
from stream.timing import alternating

log = logging.getLogger(__name__)

AGREEMENT = 0.995  # share of mask pixels a candidate must keep (the fp32 engine's masks)
FASTER = 1.05  # a passing candidate must beat fp32 by this factor: closer is timing noise
TIMED_ROUNDS = 3  # rounds over the check images when a passing candidate is timed
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")  # int8 kernels' paths
Run = Callable[[np.ndarray], np.ndarray]  # 1×3×S×S float32 → 1×S×S probabilities
Measure = Callable[[Run, Run, Sequence[np.ndarray]], tuple[float, float]]


@dataclass(frozen=True)
class Candidate:
    """A faster form of the network, built from the fp32 ONNX model.

    ``build(fp32_model, generator, calibration_inputs) -> model bytes``; ``settings`` names
    everything the build depends on beyond the weights (part of the cache key).
    """

    form: str  # what the engine's name says it runs, e.g. "int8" or "fp32 pool2"
    settings: str
    build: Callable[[bytes, Generator, list[np.ndarray]], bytes] = field(compare=False)

    @property
    def folder(self) -> str:
        """The model cache's sub-folder for this form."""
        return self.form.replace(" ", "-")


KEPT_FLOAT = ("stem", "up1", "up2")  # besides attention: full-resolution layers, few channels


def _int8(fp32: bytes, generator: Generator, calibration: list[np.ndarray]) -> bytes:
    # 7-bit weights: with 8-bit ones, AVX2 kernels without VNNI saturate, and the masks kept
    # only 97.9 % of the fp32 pixels on the validation images. The stem and the decoder run at
    # full resolution with few channels, where quantizing and dequantizing cost more than int8
    # saves; in fp32 they also keep more of the masks (docs/benchmarks.md, "CPU engines").
    return quantize_int8(fp32, generator, calibration, keep_attention=True, keep=KEPT_FLOAT,
                         reduce_range=True)


def _pooled(pool: int, then: Callable[[bytes, Generator, list[np.ndarray]], bytes] | None = None
            ) -> Callable[[bytes, Generator, list[np.ndarray]], bytes]:
    # The two attention maps over 4 096 positions are over half the exact network's CPU time:
    # attending to keys averaged over pool×pool cells cuts them pool² times (the form is
    # exported anew from the weights; slsnet.onnx_export.export_copy).
    def build(fp32: bytes, generator: Generator, calibration: list[np.ndarray]) -> bytes:
        model = export_onnx(generator, pool=pool)
        return model if then is None else then(model, generator, calibration)

    return build


_INT8_SETTINGS = "ort-static-qdq conv per-channel u8s7 minmax fp32:attention,stem,up1,up2 v3"
CANDIDATES = (
    Candidate("int8", _INT8_SETTINGS, _int8),
    Candidate("fp32 pool2", f"export{EXPORT_VERSION} attention-ort kv-avgpool2 largest-maps",
              _pooled(2)),
    Candidate("fp32 pool4", f"export{EXPORT_VERSION} attention-ort kv-avgpool4 largest-maps",
              _pooled(4)),
    Candidate("int8 pool4", f"kv-avgpool4 largest-maps, then {_INT8_SETTINGS}",
              _pooled(4, _int8)),
)


def run_of(session) -> Run:
    """An ONNX Runtime session as :data:`Run`."""
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][:, 0]


def mask_agreement(reference: Run, other: Run, inputs: Sequence[np.ndarray],
                   threshold: float) -> float:
    """The share of mask pixels (network size, at ``threshold``) on which two forms agree."""
    same = [np.mean((reference(x) > threshold) == (other(x) > threshold)) for x in inputs]
    return float(np.mean(same))


def time_pair(reference: Run, other: Run, inputs: Sequence[np.ndarray]) -> tuple[float, float]:
    """Median ms per call of each, taken in turn over the inputs so that both see one load.

    Each turn runs one form over as many calls as there are inputs, after one untimed call
    (:func:`stream.timing.alternating`).
    """
    feeds = [itertools.cycle(inputs), itertools.cycle(inputs)]
    runs = [lambda r=r, f=f: r(next(f)) for r, f in zip((reference, other), feeds, strict=True)]
    ms = alternating(runs, warmup=0, iters=TIMED_ROUNDS * len(inputs), block=len(inputs))
    return float(np.median(ms[0])), float(np.median(ms[1]))


def candidate_key(generator: Generator, candidate: Candidate, check_set: Path = CHECK_SET) -> str:
    """What a candidate's model and verdict depend on (see the module docstring)."""
    images = hashlib.sha256(check_set.read_bytes()).hexdigest() if check_set.is_file() else "-"
    parts = [cache_key(generator), candidate.form, candidate.settings, f"bar{AGREEMENT}",
             images, *cpu_flags(VECTOR_FLAGS)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _paths(cache_dir: Path, generator: Generator, candidate: Candidate, check_set: Path
           ) -> tuple[Path, Path]:
    """A candidate's verdict and model files in the model cache."""
    folder = cache_dir / candidate.folder
    key = candidate_key(generator, candidate, check_set)
    return folder / f"slsnet-{key}.json", folder / f"slsnet-{key}.onnx"


def pending(engine_cache: Path, generator: Generator, untrained: bool,
            candidates: Sequence[Candidate] | None = None, check_set: Path = CHECK_SET
            ) -> list[str]:
    """What a start with these weights will build (empty: everything is cached)."""
    candidates = CANDIDATES if candidates is None else candidates
    todo = []
    if not (engine_cache / f"slsnet-{cache_key(generator)}.onnx").is_file():
        todo.append("exporting the network for ONNX Runtime")
    if untrained or not check_set.is_file():
        return todo
    forms = [c.form for c in candidates
             if not _paths(engine_cache, generator, c, check_set)[0].is_file()]
    if len(forms) == 1:
        todo.append(f"building its {forms[0]} form and checking it on bundled images")
    elif forms:
        todo.append(f"building its {', '.join(forms[:-1])} and {forms[-1]} forms and checking "
                    "them on bundled images")
    return todo


def _valid(record: dict) -> dict:
    float(record["agreement"]), int(record["images"]), bool(record["passed"])  # KeyError et al.
    dict(record["speed"])
    return record


def verdict(engine: OnnxEngine, candidate: Candidate, images: tuple[list, list], *,
            check_set: Path = CHECK_SET, measure: Measure | None = None
            ) -> tuple[dict, object | None]:
    """A candidate's checked record (built and recorded if not cached) and its session.

    Args:
        engine: the fp32 engine.
        candidate: the form to check.
        images: the calibration and check inputs (:func:`load_check_set` of ``check_set``).
        check_set: the file they were read from (part of the cache key).
        measure: times fp32 against the candidate (None: :func:`time_pair`).

    Returns:
        (record, session): ``record["agreement"]``, ``["images"]``, ``["passed"]`` and, when
        it passed, ``["speed"][threads] = {"fp32_ms", "ms"}`` timed on this machine with
        ``engine.threads``; ``session`` runs the candidate (None: it failed).
    """
    record_path, model_path = _paths(engine.cache_dir, engine.generator, candidate, check_set)
    calibration, checks = images
    fp32 = run_of(engine.session)
    built: dict[str, bytes] = {}

    def model_bytes() -> bytes:
        if "model" not in built:
            built["model"] = candidate.build(engine.fp32_model(), engine.generator, calibration)
        return built["model"]

    def check() -> bytes:
        t0 = time.perf_counter()
        agreement = mask_agreement(fp32, run_of(engine.session_of(model_bytes())), checks,
                                   engine.threshold)
        log.info("built and checked the %s form in %.0f s", candidate.form,
                 time.perf_counter() - t0)
        return record_bytes({"form": candidate.form, "settings": candidate.settings,
                             "agreement": agreement, "images": len(checks), "bar": AGREEMENT,
                             "passed": agreement >= AGREEMENT, "speed": {},
                             "built": datetime.date.today().isoformat()})

    record, _, record_path = load_or_build(record_path, check, lambda s: _valid(read_record(s)),
                                           what=f"{candidate.form} check")
    if not record["passed"]:
        return record, None
    session, _, _ = load_or_build(model_path, model_bytes, engine.session_of,
                                  what=f"{candidate.form} model")
    threads = str(engine.threads)
    if threads not in record["speed"]:
        fp32_ms, ms = (measure or time_pair)(fp32, run_of(session), checks)
        record["speed"][threads] = {"fp32_ms": round(fp32_ms, 2), "ms": round(ms, 2)}
        update_record(record_path, record)
    return record, session


def choose(engine: OnnxEngine, *, candidates: Sequence[Candidate] | None = None,
           check_set: Path = CHECK_SET, measure: Measure | None = None) -> OnnxEngine:
    """Switch ``engine`` to its fastest checked form; ``engine.choice`` says why, in one line.

    Args:
        engine: the fp32 engine (its weights, threads and cache).
        candidates: the forms to consider (None: :data:`CANDIDATES`).
        check_set: the bundled calibration and check images.
        measure: times fp32 against a candidate (None: :func:`time_pair`).
    """
    candidates = CANDIDATES if candidates is None else candidates
    if engine.untrained:
        engine.choice = "random weights: only fp32 runs (no form is checked on them)"
        return engine
    try:
        images = load_check_set(engine.size, check_set)
    except FileNotFoundError as exc:
        engine.choice = f"{exc}: only fp32 runs"
        return engine
    notes, best = [], None  # best: (ms, form, session)
    for candidate in candidates:
        try:
            record, session = verdict(engine, candidate, images, check_set=check_set,
                                      measure=measure)
        except Exception as exc:  # a library's failure to build a form leaves fp32 running
            log.warning("the %s form could not be built: %s", candidate.form, exc)
            notes.append(f"{candidate.form}: could not be built ({type(exc).__name__}), not used")
            continue
        agreement = f"{100 * record['agreement']:.1f} % mask agreement"
        if not record["passed"]:
            notes.append(f"{candidate.form}: {agreement} < {100 * AGREEMENT:.1f} % on "
                         f"{record['images']} bundled images, not used")
            continue
        speed = record["speed"][str(engine.threads)]
        gain = speed["fp32_ms"] / speed["ms"]
        if gain < FASTER:
            notes.append(f"{candidate.form}: {agreement} but {gain:.2f}× the fp32 speed here, "
                         "not used")
            continue
        notes.append(f"{candidate.form}: {agreement}, {gain:.2f}× the fp32 speed here")
        if best is None or speed["ms"] < best[0]:
            best = (speed["ms"], candidate.form, session)
    if best is not None:
        engine.use(best[2], best[1])
    engine.choice = "; ".join(notes) or None
    return engine
