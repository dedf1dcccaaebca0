import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import slsnet.train
from slsnet import SLSNetConfig, build_generator, load_generator
from slsnet.card import main as card_main
from slsnet.evaluate import main as evaluate_main
from slsnet.export import WeightsError, save_generator
from slsnet.gan import GANTrainer, Hyper
from slsnet.predict import main as predict_main
from slsnet.train import main as train_main

ISIC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isic2017"


def _copy_split(src: Path, dst: Path, n: int) -> None:
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir(parents=True)
    for image in sorted((src / "images").iterdir())[:n]:
        shutil.copy(image, dst / "images")
        shutil.copy(src / "masks" / f"{image.stem}_segmentation.png", dst / "masks")


@pytest.fixture(scope="module")
def tiny_isic(tmp_path_factory) -> Path:
    if not ISIC.is_dir():
        pytest.skip(f"ISIC 2017 data not found at {ISIC}")
    root = tmp_path_factory.mktemp("isic")
    _copy_split(ISIC / "train", root / "train", 4)
    _copy_split(ISIC / "val", root / "val", 2)
    return root


def _train(data: Path, out: Path, *extra: str) -> int:
    return train_main(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--size",
            "64",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            *extra,
        ]
    )


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained_run(tiny_isic, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert _train(tiny_isic, run, "--epochs", "1") == 0
    return run


@pytest.mark.timeout(300)
def test_real_training_writes_checkpoints_log_and_curves(trained_run):
    run = trained_run
    for name in ("last.pt", "best.pt", "last_generator.pt", "log.jsonl", "curves.png", "args.json"):
        assert (run / name).is_file(), name
    (record,) = _log(run)
    assert record["epoch"] == 1 and record["images_per_s"] > 0
    assert set(record["val"]) == {"acc", "dsc", "jsc", "sen", "spe", "jsc_th"}
    assert np.isfinite(record["g_total"]) and np.isfinite(record["d_total"])
    assert cv2.imread(str(run / "curves.png")).shape == (450, 800, 3)
    gen = load_generator(run / "best.pt")
    assert gen.config.input_size == 64


@pytest.mark.timeout(300)
def test_resume_reproduces_the_uninterrupted_run(tiny_isic, tmp_path):
    # given: one run of two epochs, and one stopped after the first epoch
    assert _train(tiny_isic, tmp_path / "a", "--epochs", "2") == 0
    assert _train(tiny_isic, tmp_path / "b", "--epochs", "1") == 0
    # when
    assert _train(tiny_isic, tmp_path / "b", "--epochs", "2", "--resume") == 0
    # then: the resumed second epoch is the same, loss for loss
    a, b = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert len(b) == 2
    for key in ("g_total", "d_total", "g_jaccard"):
        assert a[1][key] == pytest.approx(b[1][key], rel=1e-5), key
    assert a[1]["val"]["jsc"] == pytest.approx(b[1]["val"]["jsc"], abs=1e-6)


def test_existing_run_needs_resume(tiny_isic, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"x")
    with pytest.raises(SystemExit, match="already holds a run"):
        _train(tiny_isic, tmp_path / "run", "--epochs", "1")


def _constant_generator(prob_logit: float):
    gen = build_generator()
    torch.nn.init.zeros_(gen.head.weight)
    torch.nn.init.constant_(gen.head.bias, prob_logit)
    return gen


def test_evaluate_gives_hand_computed_metrics(tmp_path, capsys):
    # given: two 20×10 images; masks with 50 and 0 lesion pixels; a net that predicts "all lesion"
    data = tmp_path / "set"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    mask_a = np.zeros((10, 20), np.uint8)
    mask_a[:, :5] = 255
    for stem, mask in (("IMD001", mask_a), ("IMD002", np.zeros((10, 20), np.uint8))):
        cv2.imwrite(str(data / "images" / f"{stem}.bmp"), np.full((10, 20, 3), 128, np.uint8))
        cv2.imwrite(str(data / "masks" / f"{stem}_lesion.png"), mask)
    weights = save_generator(_constant_generator(10.0), tmp_path / "all.pt")
    # when
    rc = evaluate_main(
        [
            "--data",
            str(data),
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "m.json"),
            "--overlays",
            str(tmp_path / "o.png"),
        ]
    )
    # then: A: TP 50 FP 150 → JSC .25 DSC .4 ACC .25 SEN 1 SPE 0; B: TP 0 FP 200 → all 0 but SEN 1
    assert rc == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["n"] == 2
    m = result["metrics"]
    assert m["jsc"] == pytest.approx(0.125)
    assert m["dsc"] == pytest.approx(0.2)
    assert m["acc"] == pytest.approx(0.125)
    assert m["sen"] == pytest.approx(1.0)
    assert m["spe"] == pytest.approx(0.0)
    assert m["jsc_th"] == 0.0
    assert cv2.imread(str(tmp_path / "o.png")) is not None
    assert "paper" in capsys.readouterr().out


def test_loader_rejects_truncated_and_foreign_files(tmp_path):
    path = save_generator(build_generator(), tmp_path / "g.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_generator(tmp_path / "cut.pt")
    with pytest.raises(WeightsError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not an SLSNet"):
        load_generator(tmp_path / "other.pt")
    blob = torch.load(path, weights_only=True)
    blob["config"]["widths"] = [24, 48, 96]
    torch.save(blob, tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match="does not match"):
        load_generator(tmp_path / "shape.pt")


def test_predict_writes_masks_at_each_images_size(tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((200, 300, 3), 90, np.uint8))
    cv2.imwrite(str(images / "b.jpg"), np.full((77, 51, 3), 200, np.uint8))
    weights = save_generator(_constant_generator(10.0), tmp_path / "all.pt")
    rc = predict_main(
        [str(images), "--weights", str(weights), "--out", str(tmp_path / "out"), "--device", "cpu"]
    )
    assert rc == 0
    a = cv2.imread(str(tmp_path / "out" / "a_mask.png"), cv2.IMREAD_GRAYSCALE)
    b = cv2.imread(str(tmp_path / "out" / "b_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert a.shape == (200, 300) and b.shape == (77, 51)
    assert set(np.unique(a)) == {255}
    assert (tmp_path / "out" / "a_overlay.png").is_file()


def test_predict_reports_a_missing_input(tmp_path, capsys):
    rc = predict_main([str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert (
        capsys.readouterr().err.strip() == f"error: no such file or folder: {tmp_path / 'nope.png'}"
    )


@pytest.mark.timeout(300)
def test_model_card_export(trained_run, tiny_isic, tmp_path, capsys):
    # when
    out = tmp_path / "weights" / "model.pt"
    assert (
        card_main(["--run", str(trained_run), "--data", str(tiny_isic / "val"), "--out", str(out)])
        == 0
    )
    # then: the weights load, and the card carries what a user needs to trust them
    gen = load_generator(out)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["parameters"] == sum(p.numel() for p in gen.parameters())
    assert SLSNetConfig.from_dict(card["config"]) == gen.config
    assert card["input"]["size_wh"] == [64, 64]
    assert card["threshold"] == 0.5
    assert card["training"]["epochs_run"] == 1
    assert card["evaluation"]["n"] == 2
    assert set(card["evaluation"]["metrics"]) == {"acc", "dsc", "jsc", "sen", "spe", "jsc_th"}
    assert any("1710.05006" in c for c in card["citations"])
    (phase,) = card["training"]["commands"]
    assert phase["from_epoch"] == 0
    assert phase["command"].startswith("python -m slsnet.train --data")
    assert card["training"]["initialised_from"] is None
    assert "crop" not in card["training"]["augmentation"]


def test_shipped_weights_load_and_match_their_card():
    weights = Path(__file__).resolve().parents[1] / "weights" / "slsnet_isic2017.pt"
    if not weights.is_file():
        pytest.skip("no shipped weights in this checkout")
    gen = load_generator(weights)
    card = json.loads(weights.with_suffix(".json").read_text())
    assert SLSNetConfig.from_dict(card["config"]) == gen.config
    assert card["parameters"] == sum(p.numel() for p in gen.parameters())
    assert 0.0 < card["evaluation"]["metrics"]["jsc"] <= 1.0
    # the weights really segment: a dark disc on light skin is found, the skin is not
    image = np.full((128, 128, 3), (205, 170, 150), np.uint8)
    cv2.circle(image, (64, 64), 30, (90, 60, 50), -1)
    from slsnet.inference import predict_probs

    prob = predict_probs(gen, [image], device=torch.device("cpu"))[0]
    assert prob[64, 64] > 0.5 > prob[5, 5]


def test_a_resume_with_a_new_learning_rate_uses_it():
    # given a checkpoint saved at lr 5e-4
    first = GANTrainer(SLSNetConfig(), Hyper(lr=5e-4), torch.device("cpu"))
    state = first.state()
    # when it is resumed with --lr 1e-4
    second = GANTrainer(SLSNetConfig(), Hyper(lr=1e-4), torch.device("cpu"))
    second.load_state(state)
    # then both optimisers run at 1e-4, not at the rate stored in the checkpoint
    rates = {g["lr"] for opt in (second.opt_g, second.opt_d) for g in opt.param_groups}
    assert rates == {1e-4}


@pytest.mark.timeout(300)
def test_sigterm_stops_training_cleanly_and_the_run_resumes(tiny_isic, tmp_path):
    # given a long training run in its own process, one epoch in
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "slsnet.train", "--data", str(tiny_isic), "--out", str(out),
           "--size", "64", "--batch-size", "2", "--device", "cpu", "--epochs", "100"]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        deadline = time.monotonic() + 240
        # the epoch's log line (written just before last.pt, with signals held until both are)
        while not ((out / "log.jsonl").exists() and (out / "log.jsonl").read_text().strip()
                   ) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        # when a scheduler (or `kill`) sends SIGTERM
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    # then it ends as after Ctrl-C: one line, 130, and a checkpoint that resumes
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: the last finished epoch is in last.pt" in err
    assert "Traceback" not in err
    done = len(_log(out))
    assert _train(tiny_isic, out, "--epochs", str(done + 1), "--resume") == 0
    assert [r["epoch"] for r in _log(out)] == list(range(1, done + 2))


@pytest.mark.timeout(300)
def test_a_signal_during_the_epoch_writes_waits_for_them(tiny_isic, tmp_path, monkeypatch):
    # given SIGTERM arriving while the first epoch's files are being written
    real_save = slsnet.train.save_generator

    def save_then_signal(*args, **kwargs):
        path = real_save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return path

    monkeypatch.setattr(slsnet.train, "save_generator", save_then_signal)
    out = tmp_path / "run"
    # when / then: training stops as after Ctrl-C, but only once the epoch is all on disk
    assert _train(tiny_isic, out, "--epochs", "3") == 130
    assert [r["epoch"] for r in _log(out)] == [1]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert load_generator(out / "last_generator.pt") is not None


def test_resume_drops_log_lines_the_checkpoint_does_not_hold(tiny_isic, tmp_path):
    # given a run whose log got a line for an epoch that never reached last.pt (a crash)
    out = tmp_path / "run"
    assert _train(tiny_isic, out, "--epochs", "1") == 0
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "val": {"jsc": 0.99}}) + "\n")
        f.write('{"epoch": 3, "val": {"js')  # and a line a crash cut short
    # when it resumes
    assert _train(tiny_isic, out, "--epochs", "2", "--resume") == 0
    # then epoch 2 is on record once, as trained
    log = _log(out)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[1]["val"]["jsc"] != 0.99


def _batch(seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    return x, (torch.rand(2, 1, size, size, generator=g) > 0.5).float()


def test_moving_average_of_the_generator_follows_every_step():
    # given a trainer that keeps a moving average with decay 0.5
    torch.manual_seed(0)
    trainer = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.5), torch.device("cpu"))
    weight = lambda g: g.head.weight.detach().clone()  # noqa: E731
    # when it takes two steps, noting the raw weights after each
    trainer.step(*_batch(0))
    w1 = weight(trainer.generator)
    trainer.step(*_batch(1))
    w2 = weight(trainer.generator)
    # then the average is w1 after the first step, blended 0.5/0.5 after the second
    assert trainer.averaged is not trainer.generator
    torch.testing.assert_close(weight(trainer.averaged), 0.5 * w1 + 0.5 * w2)
    assert not torch.equal(w1, w2)
    # and BatchNorm statistics are averaged too, not left at their initial values
    bn = [m for m in trainer.averaged.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    # and without a decay the generator itself is what is validated and saved
    plain = GANTrainer(SLSNetConfig(input_size=32), Hyper(), torch.device("cpu"))
    assert plain.averaged is plain.generator and "ema" not in plain.state()


def test_moving_average_resumes_and_starts_from_an_older_checkpoint():
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    # given a checkpoint with an average, and one saved without (an older run)
    with_ema = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.9), cpu)
    with_ema.step(*_batch(0))
    with_ema.step(*_batch(1))
    without = GANTrainer(SLSNetConfig(input_size=32), Hyper(), cpu)
    without.step(*_batch(2))
    # when each is resumed with --ema-decay
    a = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.9), cpu)
    a.load_state(with_ema.state())
    b = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.9), cpu)
    b.load_state(without.state())
    # then the first continues its average, the second starts it at the loaded generator
    for name, tensor in with_ema.averaged.state_dict().items():
        torch.testing.assert_close(a.averaged.state_dict()[name], tensor)
    for name, tensor in without.generator.state_dict().items():
        torch.testing.assert_close(b.averaged.state_dict()[name], tensor)
    assert int(a.ema.n_averaged) == 2 and int(b.ema.n_averaged) == 1


@pytest.mark.timeout(300)
def test_training_with_a_moving_average_saves_it_and_resumes_exactly(tiny_isic, tmp_path):
    # given one run of two epochs, and one stopped after the first, both with --ema-decay
    assert _train(tiny_isic, tmp_path / "a", "--epochs", "2", "--ema-decay", "0.9") == 0
    assert _train(tiny_isic, tmp_path / "b", "--epochs", "1", "--ema-decay", "0.9") == 0
    assert _train(tiny_isic, tmp_path / "b", "--epochs", "2", "--ema-decay", "0.9",
                  "--resume") == 0
    # then the resumed run validates the same average
    a, b = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert a[1]["val"] == pytest.approx(b[1]["val"], abs=1e-6)
    # and the saved generator is the average, not the raw weights
    ckpt = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    saved = load_generator(tmp_path / "a" / "last_generator.pt").state_dict()
    raw = ckpt["trainer"]["generator"]
    assert not torch.equal(saved["head.weight"], raw["head.weight"])
    torch.testing.assert_close(saved["head.weight"], ckpt["trainer"]["ema"]["module.head.weight"])


@pytest.mark.parametrize("decay", ["1.0", "-0.1"])
def test_a_bad_ema_decay_is_one_error_line(tiny_isic, tmp_path, capsys, decay):
    assert _train(tiny_isic, tmp_path / "run", "--epochs", "1", "--ema-decay", decay) == 2
    assert capsys.readouterr().err.strip() == f"error: --ema-decay must be in [0, 1), not {decay}"
    assert not (tmp_path / "run").exists()


def test_start_from_copies_a_trained_generator_into_g_and_its_average():
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    # given a generator that took a step, and a fresh trainer with a moving average
    donor = GANTrainer(SLSNetConfig(input_size=32), Hyper(), cpu)
    donor.step(*_batch(0))
    trainer = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.9), cpu)
    # when
    trainer.start_from(donor.generator)
    # then both G and the average start from its weights and BatchNorm statistics
    for name, tensor in donor.generator.state_dict().items():
        torch.testing.assert_close(trainer.generator.state_dict()[name], tensor)
        torch.testing.assert_close(trainer.averaged.state_dict()[name], tensor)
    # and weights for another input size are refused
    with pytest.raises(ValueError, match="--init weights are for"):
        GANTrainer(SLSNetConfig(input_size=64), Hyper(), cpu).start_from(donor.generator)


@pytest.mark.timeout(300)
def test_fine_tuning_with_zoom_crops_starts_from_the_given_weights(trained_run, tiny_isic,
                                                                   tmp_path):
    # given: shipped weights with their card
    val = ["--data", str(tiny_isic / "val")]
    parent = tmp_path / "parent.pt"
    assert card_main(["--run", str(trained_run), *val, "--out", str(parent)]) == 0
    # when: a run starts from them, with zoom crops and no learning, and is exported in turn
    assert _train(tiny_isic, tmp_path / "ft", "--epochs", "1", "--init", str(parent),
                  "--zoom", "1", "--lr", "0") == 0
    parent_card = json.loads((tmp_path / "parent.json").read_text())
    # and the file it started from is replaced (as shipped weights are) before the export
    assert card_main(["--run", str(trained_run), *val, "--out", str(parent), "--note", "new"]) == 0
    assert card_main(["--run", str(tmp_path / "ft"), *val, "--out", str(tmp_path / "ft.pt")]) == 0
    # then: its (unchanged) convolution weights are those it started from
    start = load_generator(parent).state_dict()
    tuned = load_generator(tmp_path / "ft.pt").state_dict()
    torch.testing.assert_close(tuned["head.weight"], start["head.weight"])
    # and its card tells the whole history: the crops, the weights it started from and their
    # card as it was when the fine-tuning began
    card = json.loads((tmp_path / "ft.json").read_text())
    assert "random square crop of 1/z of the image, z uniform in 1-2.0" in (
        card["training"]["augmentation"])
    assert card["training"]["initialised_from"] == {
        "weights": str(parent),
        "training": parent_card["training"],
        "evaluation": parent_card["evaluation"],
        "notes": parent_card["notes"],
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--init", "nowhere.pt"], "error: weights file not found: nowhere.pt"),
        (["--zoom", "1.5"], "error: --zoom is a probability in [0, 1], not 1.5"),
        (["--zoom", "0.5", "--max-zoom", "0.5"], "error: --max-zoom must be at least 1, not 0.5"),
    ],
)
def test_bad_fine_tuning_flags_are_one_error_line(tiny_isic, tmp_path, capsys, flags, message):
    assert _train(tiny_isic, tmp_path / "run", "--epochs", "1", *flags) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "run").exists()


def test_weights_for_another_input_size_are_refused_before_the_run_folder(trained_run,
                                                                          tiny_isic, tmp_path,
                                                                          capsys):
    # given: weights trained at 64×64; when: a 32×32 run starts from them
    assert _train(tiny_isic, tmp_path / "run", "--epochs", "1", "--size", "32",
                  "--init", str(trained_run / "best.pt")) == 2
    # then: one error line, and nothing written
    assert capsys.readouterr().err.strip().startswith("error: --init weights are for ")
    assert not (tmp_path / "run").exists()
