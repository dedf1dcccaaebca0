"""Real training runs on a few ISIC images: checkpoints, resume, signals, fine-tuning, bad flags.

The GAN's own step and moving average are in test_gan.py; evaluate, predict and the model card
in test_model_tools.py.
"""

import json
import math
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
from support.isic_runs import read_log, train

import slsnet.train
import slsnet.train_args
from slsnet import load_generator
from slsnet.card import main as card_main


@pytest.mark.timeout(300)
def test_real_training_writes_checkpoints_log_and_curves(trained_run):
    run = trained_run
    for name in ("last.pt", "best.pt", "last_generator.pt", "log.jsonl", "curves.png", "args.json"):
        assert (run / name).is_file(), name
    (record,) = read_log(run)
    assert record["epoch"] == 1 and record["images_per_s"] > 0
    assert set(record["val"]) == {"acc", "dsc", "jsc", "sen", "spe", "jsc_th"}
    assert np.isfinite(record["g_total"]) and np.isfinite(record["d_total"])
    assert cv2.imread(str(run / "curves.png")).shape == (450, 800, 3)
    gen = load_generator(run / "best.pt")
    assert gen.config.input_size == 64


@pytest.mark.timeout(300)
def test_resume_reproduces_the_uninterrupted_run(tiny_isic, tmp_path):
    # given: one run of two epochs, and one stopped after the first epoch
    assert train(tiny_isic, tmp_path / "a", "--epochs", "2") == 0
    assert train(tiny_isic, tmp_path / "b", "--epochs", "1") == 0
    # when
    assert train(tiny_isic, tmp_path / "b", "--epochs", "2", "--resume") == 0
    # then: the resumed second epoch is the same, loss for loss
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert len(b) == 2
    for key in ("g_total", "d_total", "g_jaccard"):
        assert a[1][key] == pytest.approx(b[1][key], rel=1e-5), key
    assert a[1]["val"]["jsc"] == pytest.approx(b[1]["val"]["jsc"], abs=1e-6)


@pytest.mark.timeout(300)
def test_a_run_branches_at_an_epoch_by_a_copy_of_its_folder(tiny_isic, tmp_path):
    # given a run stopped after epoch 1 of 2, and a copy of its folder
    assert train(tiny_isic, tmp_path / "main", "--epochs", "2", "--stop-after", "1") == 0
    shutil.copytree(tmp_path / "main", tmp_path / "branch")
    # when each goes on with its own discriminator rate
    assert train(tiny_isic, tmp_path / "main", "--epochs", "2", "--resume") == 0
    assert train(tiny_isic, tmp_path / "branch", "--epochs", "2", "--resume",
                 "--d-lr-scale", "0.25") == 0
    # then they share epoch 1 and part at epoch 2, the branch with D at a quarter of G's rate
    main, branch = read_log(tmp_path / "main"), read_log(tmp_path / "branch")
    assert main[0] == branch[0] and main[1]["d_total"] != branch[1]["d_total"]
    state = torch.load(tmp_path / "branch" / "last.pt", weights_only=True)["trainer"]
    rate_g, rate_d = (state[k]["param_groups"][0]["lr"] for k in ("opt_g", "opt_d"))
    assert rate_d == 0.25 * rate_g
    # and the branch's folder says how it was made, command by command
    lines = (tmp_path / "branch" / "commands.jsonl").read_text().splitlines()
    assert [json.loads(line)["args"]["d_lr_scale"] for line in lines] == [1.0, 0.25]


def test_existing_run_needs_resume(tiny_isic, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"x")
    with pytest.raises(SystemExit, match="already holds a run"):
        train(tiny_isic, tmp_path / "run", "--epochs", "1")


@pytest.mark.timeout(300)
def test_sigterm_stops_training_cleanly_and_the_run_resumes(tiny_isic, tmp_path):
    # given a long training run in its own process, one epoch in
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "slsnet.train", "--data", str(tiny_isic), "--out", str(out),
           "--size", "64", "--batch-size", "2", "--device", "cpu", "--epochs", "100"]
    root = Path(__file__).resolve().parents[2]
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
    done = len(read_log(out))
    assert train(tiny_isic, out, "--epochs", str(done + 1), "--resume") == 0
    assert [r["epoch"] for r in read_log(out)] == list(range(1, done + 2))


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
    assert train(tiny_isic, out, "--epochs", "3") == 130
    assert [r["epoch"] for r in read_log(out)] == [1]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert load_generator(out / "last_generator.pt") is not None


def test_resume_drops_log_lines_the_checkpoint_does_not_hold(tiny_isic, tmp_path):
    # given a run whose log got a line for an epoch that never reached last.pt (a crash)
    out = tmp_path / "run"
    assert train(tiny_isic, out, "--epochs", "1") == 0
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "val": {"jsc": 0.99}}) + "\n")
        f.write('{"epoch": 3, "val": {"js')  # and a line a crash cut short
    # when it resumes
    assert train(tiny_isic, out, "--epochs", "2", "--resume") == 0
    # then epoch 2 is on record once, as trained
    log = read_log(out)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[1]["val"]["jsc"] != 0.99


@pytest.mark.timeout(300)
def test_training_with_a_moving_average_saves_it_and_resumes_exactly(tiny_isic, tmp_path):
    # given one run of two epochs, and one stopped after the first, both with --ema-decay
    assert train(tiny_isic, tmp_path / "a", "--epochs", "2", "--ema-decay", "0.9") == 0
    assert train(tiny_isic, tmp_path / "b", "--epochs", "1", "--ema-decay", "0.9") == 0
    assert train(tiny_isic, tmp_path / "b", "--epochs", "2", "--ema-decay", "0.9",
                  "--resume") == 0
    # then the resumed run validates the same average
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert a[1]["val"] == pytest.approx(b[1]["val"], abs=1e-6)
    # and the saved generator is the average, not the raw weights
    ckpt = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    saved = load_generator(tmp_path / "a" / "last_generator.pt").state_dict()
    raw = ckpt["trainer"]["generator"]
    assert not torch.equal(saved["head.weight"], raw["head.weight"])
    torch.testing.assert_close(saved["head.weight"], ckpt["trainer"]["ema"]["module.head.weight"])


def test_dropout_is_set_for_the_run_and_kept_in_its_record(tiny_isic, tmp_path):
    # given a run with the generator's dropout turned off in the encoder and halved after it
    assert train(tiny_isic, tmp_path / "run", "--epochs", "1", "--dropout", "0,0,0.05") == 0
    # then the run's record holds that network, and its dropout layers train with it
    config = json.loads((tmp_path / "run" / "args.json").read_text())["config"]
    assert (config["dropout_mid"], config["dropout_deep"], config["dropout_decoder"]) == (
        0.0, 0.0, 0.05)
    generator = load_generator(tmp_path / "run" / "last_generator.pt")
    assert {m.p for m in generator.modules() if isinstance(m, torch.nn.Dropout2d)} == {0.05}


@pytest.mark.timeout(300)
def test_the_lovasz_term_is_trained_logged_and_on_the_card(tiny_isic, tmp_path):
    # given a run with the Lovász term beside the paper's
    run = tmp_path / "run"
    assert train(tiny_isic, run, "--epochs", "1", "--lovasz-weight", "0.5") == 0
    # then its value is logged each epoch, and the card's loss names it
    (record,) = read_log(run)
    assert 0 < record["g_lovasz"] <= 1
    out = tmp_path / "w.pt"
    assert card_main(["--run", str(run), "--data", str(tiny_isic / "val"), "--out", str(out)]) == 0
    assert "0.5·Lovász" in json.loads(out.with_suffix(".json").read_text())["training"]["loss"]


@pytest.mark.timeout(300)
def test_colour_constancy_is_part_of_the_network_through_resume_and_fine_tuning(tiny_isic,
                                                                                tmp_path, capsys):
    # given a run whose generator grey-balances its input
    run = tmp_path / "run"
    assert train(tiny_isic, run, "--epochs", "1", "--grey-p", "6") == 0
    assert json.loads((run / "args.json").read_text())["config"]["grey_p"] == 6
    # when it is resumed without the flag, it goes on with the same network
    assert train(tiny_isic, run, "--epochs", "2", "--resume") == 0
    assert load_generator(run / "last_generator.pt").config.grey_p == 6
    # and a resume that would change the network is one error line, the run as it was
    log = (run / "log.jsonl").read_text()
    capsys.readouterr()
    assert train(tiny_isic, run, "--epochs", "3", "--resume", "--grey-p", "0") == 2
    assert capsys.readouterr().err.strip() == (
        "error: the run was trained with --grey-p 6; resume it with that value or without the "
        "flag")
    assert (run / "log.jsonl").read_text() == log
    # and fine-tuning its weights keeps their colour constancy unless told otherwise
    assert train(tiny_isic, tmp_path / "ft", "--epochs", "1", "--lr", "0",
                 "--init", str(run / "last_generator.pt")) == 0
    assert load_generator(tmp_path / "ft" / "last_generator.pt").config.grey_p == 6
    # and the model card of its weights says how their input is balanced
    assert card_main(["--run", str(run), "--data", str(tiny_isic / "val"),
                      "--out", str(tmp_path / "grey.pt")]) == 0
    card = json.loads((tmp_path / "grey.json").read_text())
    assert card["input"]["colour_constancy"].startswith("Shades of Grey, p = 6, per image")


@pytest.mark.parametrize("decay", ["1.0", "-0.1"])
def test_a_bad_ema_decay_is_one_error_line(tiny_isic, tmp_path, capsys, decay):
    assert train(tiny_isic, tmp_path / "run", "--epochs", "1", "--ema-decay", decay) == 2
    assert capsys.readouterr().err.strip() == f"error: --ema-decay must be in [0, 1), not {decay}"
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(300)
def test_fine_tuning_with_zoom_crops_starts_from_the_given_weights(trained_run, tiny_isic,
                                                                   tmp_path):
    # given: shipped weights with their card
    val = ["--data", str(tiny_isic / "val")]
    parent = tmp_path / "parent.pt"
    assert card_main(["--run", str(trained_run), *val, "--out", str(parent)]) == 0
    # when: a run starts from them, with zoom crops and no learning, and is exported in turn
    assert train(tiny_isic, tmp_path / "ft", "--epochs", "1", "--init", str(parent),
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


@pytest.mark.timeout(300)
def test_a_cosine_schedule_with_aimed_crops_and_rotations_lowers_the_rate_and_says_so(tiny_isic,
                                                                                 tmp_path):
    # given: 4 training images in batches of 2, so 2 steps an epoch and 4 in all
    run = tmp_path / "run"
    # when: two epochs with the cosine schedule and every image turned
    assert train(tiny_isic, run, "--epochs", "2", "--lr", "1e-4", "--lr-schedule", "cosine",
                 "--rotate", "1", "--zoom", "0.5", "--zoom-aim", "lesion", "--colour",
                 "0.5", "--weight-decay", "0.05") == 0
    # then: the rate of each epoch's last step (steps 1 and 3) follows the cosine from 1e-4 to 0
    rates = [r["lr"] for r in read_log(run)]
    assert rates == pytest.approx([0.5e-4 * (1 + math.cos(math.pi * s / 4)) for s in (1, 3)])
    # and the card of these weights says how they were trained
    val = ["--data", str(tiny_isic / "val")]
    assert card_main(["--run", str(run), *val, "--out", str(tmp_path / "w.pt")]) == 0
    training = json.loads((tmp_path / "w.json").read_text())["training"]
    assert "z uniform in 1-2.0, holding the lesion's centre; then, with probability 1.0, a " \
        "rotation by a uniform random angle" in training["augmentation"]
    assert training["augmentation"].endswith("; last, with probability 0.5, hue turned by up to "
                                             "±16°, saturation scaled by 0.75-1.25 and "
                                             "brightness by 0.8-1.2")
    assert "lr follows a cosine from 0.0001 to 0 over 2 epochs" in training["optimiser"]
    assert "G's optimiser is AdamW, decoupled weight decay 0.05 of its convolution and linear " \
        "weights" in training["optimiser"]
    groups = torch.load(run / "last.pt", weights_only=True)["trainer"]["opt_g"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]


def test_the_constant_schedule_is_the_given_rate_at_every_step():
    argv = ["--data", "d", "--out", "o", "--lr", "3e-4"]
    args = slsnet.train_args.build_parser().parse_args(argv)
    assert [slsnet.train_args.learning_rate(args, s, 10) for s in (0, 5, 9)] == [3e-4] * 3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--init", "nowhere.pt"], "error: weights file not found: nowhere.pt"),
        (["--zoom", "1.5"], "error: --zoom is a probability in [0, 1], not 1.5"),
        (["--zoom", "0.5", "--max-zoom", "0.5"], "error: --max-zoom must be at least 1, not 0.5"),
        (["--rotate", "2"], "error: --rotate is a probability in [0, 1], not 2.0"),
        (["--colour", "-1"], "error: --colour is a probability in [0, 1], not -1.0"),
        (["--d-lr-scale", "0"], "error: --d-lr-scale must be above 0, not 0.0"),
        (["--weight-decay", "-0.1"], "error: --weight-decay must be in [0, 1), not -0.1"),
        (["--dropout", "0.1,0.3"], "error: --dropout is three probabilities in [0, 1) as "
                                   "MID,DEEP,DECODER, not 0.1,0.3"),
        (["--dropout", "0,1,0"], "error: --dropout is three probabilities in [0, 1) as "
                                 "MID,DEEP,DECODER, not 0,1,0"),
        (["--grey-p", "0.5"], "error: --grey-p is 0 (none) or a finite exponent of at least "
                              "1, not 0.5"),
    ],
)
def test_bad_fine_tuning_flags_are_one_error_line(tiny_isic, tmp_path, capsys, flags, message):
    assert train(tiny_isic, tmp_path / "run", "--epochs", "1", *flags) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "run").exists()


def test_weights_for_another_input_size_are_refused_before_the_run_folder(trained_run,
                                                                          tiny_isic, tmp_path,
                                                                          capsys):
    # given: weights trained at 64×64; when: a 32×32 run starts from them
    assert train(tiny_isic, tmp_path / "run", "--epochs", "1", "--size", "32",
                  "--init", str(trained_run / "best.pt")) == 2
    # then: one error line, and nothing written
    assert capsys.readouterr().err.strip().startswith("error: --init weights are for ")
    assert not (tmp_path / "run").exists()


def test_a_resume_that_would_add_weight_decay_is_one_error_line(trained_run, tiny_isic,
                                                                 tmp_path, capsys):
    # given a finished run trained with Adam (no decay), copied
    shutil.copytree(trained_run, tmp_path / "run")
    log = (tmp_path / "run" / "log.jsonl").read_text()
    # when it is resumed for one more epoch with --weight-decay
    assert train(tiny_isic, tmp_path / "run", "--epochs", "2", "--resume",
                 "--weight-decay", "0.05") == 2
    # then one error line says how to resume it, and the run is as it was
    assert capsys.readouterr().err.strip() == (
        "error: the checkpoint was trained without --weight-decay; resume it without")
    assert (tmp_path / "run" / "log.jsonl").read_text() == log
