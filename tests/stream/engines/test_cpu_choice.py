"""``--runtime auto`` on the CPU: candidates built once, checked, recorded; the right one runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.isic_runs import ISIC

from slsnet.checkpoint import load_generator
from slsnet.data import find_pairs, read_rgb, resize_to_input, to_tensor
from slsnet.onnx_export import export_onnx
from stream.engines import build_engine
from stream.engines.check_set import CALIBRATION_ROWS, CHECK_ROWS, COLUMNS, load_check_set

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from stream.engines import cpu_choice  # noqa: E402  (after the importorskip)
from stream.engines.cpu_choice import (  # noqa: E402
    AGREEMENT,
    CANDIDATES,
    Candidate,
    choose,
    mask_agreement,
    run_of,
)
from stream.engines.onnx_runtime import OnnxEngine  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
WEIGHTS = ROOT / "weights" / "slsnet_isic2017.pt"
CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="needs the shipped weights")


def exact(fp32, generator, calibration):
    """A 'faster form' that is the fp32 model itself: its masks agree everywhere."""
    return fp32


def grown(fp32, generator, calibration):
    """A form whose masks grow: the output's bias raised by 2 (a sure accuracy failure)."""
    shifted = load_generator(WEIGHTS)
    with torch.no_grad():
        shifted.head.bias += 2.0
    return export_onnx(shifted)


def refuse(fp32, generator, calibration):
    raise AssertionError("built again although its verdict is cached")


EXACT = Candidate("exact", "test exact v1", exact)
GROWN = Candidate("grown", "test grown v1", grown)


def faster(fp32_run, run, inputs):
    return 60.0, 30.0


def as_fast(fp32_run, run, inputs):
    return 60.0, 59.0


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache") / "slsnet"


def engine(cache: Path) -> OnnxEngine:
    return OnnxEngine(load_generator(WEIGHTS), threads=1, cache_dir=cache)


def records(cache: Path, form: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((cache / form).glob("*.json"))]


def test_check_set_is_training_then_validation_tiles_at_any_size():
    calibration, checks = load_check_set(64)
    assert len(calibration) == CALIBRATION_ROWS * COLUMNS and len(checks) == CHECK_ROWS * COLUMNS
    assert all(x.shape == (1, 3, 64, 64) and x.dtype == np.float32 for x in calibration + checks)
    assert not any(np.array_equal(a, b) for a in calibration for b in checks)


def test_failing_candidate_is_recorded_and_fp32_runs_with_the_reason(cache):
    # given a candidate whose masks grow
    # when
    chosen = choose(engine(cache), candidates=[GROWN], measure=faster)
    # then fp32 runs, and one line says why, with the measured agreement
    (record,) = records(cache, "grown")
    assert not record["passed"] and record["agreement"] < AGREEMENT
    assert record["images"] == CHECK_ROWS * COLUMNS and record["speed"] == {}
    assert chosen.form == "fp32" and chosen.name == "cpu fp32 onnxruntime, 1 thread"
    assert chosen.choice == (f"grown: {100 * record['agreement']:.1f} % mask agreement < 99.5 % "
                             f"on {CHECK_ROWS * COLUMNS} bundled images, not used")
    assert not list((cache / "grown").glob("*.onnx"))  # a failed model is not kept
    # and a later start reads the verdict instead of building again
    again = choose(engine(cache), candidates=[Candidate("grown", "test grown v1", refuse)])
    assert again.form == "fp32" and again.choice == chosen.choice


def test_passing_faster_candidate_runs_and_is_named(cache):
    # given a candidate that keeps every mask pixel and times twice as fast
    # when
    chosen = choose(engine(cache), candidates=[EXACT, GROWN], measure=faster)
    # then it runs, its name says so, and its verdict and model are cached
    assert chosen.form == "exact" and chosen.name == "cpu exact onnxruntime, 1 thread"
    assert "exact: 100.0 % mask agreement, 2.00× the fp32 speed here" in chosen.choice
    assert "grown:" in chosen.choice and "not used" in chosen.choice
    (record,) = records(cache, "exact")
    assert record["passed"] and record["speed"] == {"1": {"fp32_ms": 60.0, "ms": 30.0}}
    x = np.zeros((1, 3, 128, 128), np.float32)
    reference = engine(cache).probabilities(torch.from_numpy(x))
    np.testing.assert_array_equal(chosen.probabilities(torch.from_numpy(x)), reference)
    # and a later start neither builds nor times it again
    def untimed(*args):
        raise AssertionError("timed again")

    again = choose(engine(cache), candidates=[Candidate("exact", "test exact v1", refuse)],
                   measure=untimed)
    assert again.form == "exact"


def test_passing_candidate_no_faster_than_fp32_is_not_used(tmp_path):
    chosen = choose(engine(tmp_path), candidates=[EXACT], measure=as_fast)
    assert chosen.form == "fp32"
    assert chosen.choice == "exact: 100.0 % mask agreement but 1.02× the fp32 speed here, not used"


def test_damaged_verdict_and_model_are_rebuilt(tmp_path):
    # given a cache holding a passing candidate's verdict and model
    choose(engine(tmp_path), candidates=[EXACT], measure=faster)
    (record_path,) = (tmp_path / "exact").glob("*.json")
    (model_path,) = (tmp_path / "exact").glob("*.onnx")
    model = model_path.read_bytes()
    # when the model is cut short: it is built again, the verdict kept
    model_path.write_bytes(model[: len(model) // 2])
    chosen = choose(engine(tmp_path), candidates=[EXACT], measure=faster)
    assert chosen.form == "exact" and model_path.read_bytes() == model
    # when the verdict is damaged: checked again and rewritten whole
    record_path.write_text('{"agreement": ')
    chosen = choose(engine(tmp_path), candidates=[EXACT], measure=faster)
    assert chosen.form == "exact" and json.loads(record_path.read_text())["passed"]
    assert not list((tmp_path / "exact").glob("*.tmp"))


def test_cpu_speed_is_timed_per_thread_count(tmp_path):
    choose(engine(tmp_path), candidates=[EXACT], measure=faster)
    two = OnnxEngine(load_generator(WEIGHTS), threads=2, cache_dir=tmp_path)
    chosen = choose(two, candidates=[EXACT], measure=as_fast)
    (record,) = records(tmp_path, "exact")
    assert set(record["speed"]) == {"1", "2"} and chosen.form == "fp32"


def test_shipped_int8_candidate_is_checked_and_chosen_by_its_verdict(tmp_path):
    # given the real candidates, built from the shipped weights on the bundled images
    # when
    chosen = choose(engine(tmp_path))
    # then each has a verdict, and the form that runs follows from them
    for candidate in CANDIDATES:
        (record,) = records(tmp_path, candidate.folder)
        assert 0.9 < record["agreement"] <= 1.0
        assert record["passed"] == (record["agreement"] >= AGREEMENT)
        assert candidate.form in chosen.choice
    passing = [c.form for c in CANDIDATES if records(tmp_path, c.folder)[0]["passed"]]
    assert chosen.form in ["fp32", *passing]


@pytest.mark.skipif(not (ISIC / "val").is_dir(), reason="needs the ISIC 2017 validation images")
@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.folder)
def test_a_form_the_bundled_check_passes_keeps_the_fp32_masks_on_validation_images(
        cache, candidate):
    # given a form --runtime auto builds (int8 calibrated on the bundled training images,
    # pooled attention), the bundled check images it is judged on, and validation images of
    # the data set it never saw (the first 8; the 150 images are in docs/benchmarks.md)
    fp32_engine = engine(cache)
    generator, size = fp32_engine.generator, fp32_engine.size
    calibration, checks = load_check_set(size)
    pairs = find_pairs(ISIC / "val")[:8]
    x = to_tensor(np.stack([resize_to_input(read_rgb(p.image), size) for p in pairs])).numpy()
    reference = run_of(fp32_engine.session)
    form = run_of(fp32_engine.session_of(
        candidate.build(fp32_engine.fp32_model(), generator, calibration)))
    # when the bundled check judges it, and it runs on the validation images
    checked = mask_agreement(reference, form, checks, fp32_engine.threshold)
    unseen = mask_agreement(reference, form, list(x[:, None]), fp32_engine.threshold)
    # then a form the check lets through keeps at least 99.5 % of the fp32 masks' pixels on
    # images it was not checked on (a form it stops is never run: how far it falls is the
    # weights' matter, recorded in docs/benchmarks.md)
    if checked >= AGREEMENT:
        assert unseen >= AGREEMENT, (f"passed the check ({100 * checked:.2f} %) but keeps "
                                     f"{100 * unseen:.2f} % of the pixels of unseen images")
    assert (reference(x) > fp32_engine.threshold).any()  # not between empty masks


def test_build_engine_auto_says_first_start_once_and_fp32_keeps_the_exact_engine(
        tmp_path, monkeypatch):
    # given an empty cache and one candidate that passes and is faster
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_choice, "CANDIDATES", (EXACT,))
    monkeypatch.setattr(cpu_choice, "time_pair", faster)
    said = []
    # when
    first = build_engine(device=CPU, weights=None, runtime="auto", threads=1, progress=said.append)
    second = build_engine(device=CPU, weights=None, runtime="auto", threads=1,
                          progress=said.append)
    # then the first start says, in one line, what it builds; the second says nothing
    assert len(said) == 1 and said[0].startswith("first start with these weights: exporting")
    assert "building its exact form and checking it on bundled images" in said[0]
    assert first.form == second.form == "exact"
    # and --precision fp32 runs the exact engine, choosing nothing
    monkeypatch.setattr(cpu_choice, "CANDIDATES", (Candidate("exact", "test exact v1", refuse),))
    exact_engine = build_engine(device=CPU, weights=None, runtime="auto", precision="fp32",
                                threads=1, progress=said.append)
    assert isinstance(exact_engine, OnnxEngine) and exact_engine.form == "fp32"
    assert exact_engine.choice is None and len(said) == 1


def test_a_form_that_cannot_be_built_or_checked_leaves_fp32_running(tmp_path):
    def broken(fp32, generator, calibration):
        raise RuntimeError("quantizer failed")

    chosen = choose(engine(tmp_path), candidates=[Candidate("broken", "v1", broken)])
    assert chosen.form == "fp32"
    assert chosen.choice == "broken: could not be built (RuntimeError), not used"
    # and damaged check images: nothing is built, fp32 runs, the line says why
    damaged = tmp_path / "check.jpg"
    damaged.write_bytes(b"not a picture")
    chosen = choose(engine(tmp_path), candidates=[EXACT], check_set=damaged)
    assert chosen.form == "fp32" and "check images are missing or damaged" in chosen.choice
    assert not (tmp_path / "exact").exists()


def test_random_weights_run_fp32_and_say_why(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("stream.engines.base.find_default_weights", lambda: None)
    monkeypatch.setattr(cpu_choice, "CANDIDATES", (Candidate("exact", "test exact v1", refuse),))
    chosen = build_engine(device=CPU, weights=None, runtime="auto", threads=1)
    assert chosen.form == "fp32" and chosen.untrained
    assert chosen.choice == "random weights: only fp32 runs (no form is checked on them)"


@pytest.mark.timeout(300)
def test_cli_web_and_batch_run_the_chosen_form_with_no_flag(tmp_path, monkeypatch, capsys):
    from rich.console import Console
    from support.media import write_clip

    from stream.batch.plan import Options
    from stream.batch.work import Worker
    from stream.cli import build_parser, main
    from stream.web import runtime as web_runtime

    # given an empty cache and one candidate that passes and is faster
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_choice, "CANDIDATES", (EXACT,))
    monkeypatch.setattr(cpu_choice, "time_pair", faster)
    clip = write_clip(tmp_path / "clip.mp4", frames=3, size_wh=(96, 64))
    named = "cpu exact onnxruntime, 1 thread"
    # when the command line runs a file without --runtime or --precision
    assert main(["--video", str(clip.path), "--no-display", "--device", "cpu", "--threads", "1",
                 "--smooth", "off"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    # then it said its first start once, and names the form in its choice and start-up lines
    assert err.count("first start with these weights") == 1
    assert f"runtime auto: {named} (exact: 100.0 % mask agreement, 2.00× the fp32" in err
    assert f"→ {named}, smoothing off" in err
    # when the web demo starts (serving replaced by recording what it would serve)
    served = []
    monkeypatch.setattr(web_runtime, "serve", lambda engine, options: served.append(engine))
    args = build_parser().parse_args(["--gradio", "--device", "cpu", "--threads", "1"])
    assert web_runtime.run_web(args, console=Console(stderr=True)) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert served[0].name == named and f"SLSNet web demo on {named}" in err
    assert "first start" not in err  # built by the first start, read from the cache since
    # and a batch worker builds the same engine
    worker = Worker(tmp_path / "out", Options(weights=str(WEIGHTS), threads=1))
    assert worker.engine.name == named


def test_first_start_line_names_every_form_it_will_build_once(tmp_path):
    from stream.engines.cpu_choice import pending

    generator = load_generator(WEIGHTS)
    todo = pending(tmp_path, generator, untrained=False, candidates=[EXACT, GROWN])
    assert todo == ["exporting the network for ONNX Runtime",
                    "building its exact and grown forms and checking them on bundled images"]
    choose(engine(tmp_path), candidates=[EXACT], measure=faster)  # exports, checks "exact"
    assert pending(tmp_path, generator, untrained=False, candidates=[EXACT, GROWN]) == [
        "building its grown form and checking it on bundled images"]
    assert pending(tmp_path, generator, untrained=True, candidates=[EXACT, GROWN]) == []
