"""Multi-resolution schedules: parsing, phases run in order, resume inside a phase, samples."""

import argparse
import copy
import json

import numpy as np
import pytest
import torch
from support.isic_runs import read_log, train

from slsnet import load_generator
from slsnet.batchnorm import calibrated, spread
from slsnet.card import main as card_main
from slsnet.config import SLSNetConfig
from slsnet.data import Batches, to_tensor
from slsnet.generator import build_generator
from slsnet.schedule import Phase, parse_schedule, phase_of, phase_spans, total_epochs
from slsnet.train_args import learning_rate
from slsnet.train_bench import main as bench_main


def test_parse_schedule_reads_phases_and_defaults_to_the_adversarial_game():
    phases = parse_schedule("64:60:sup, 96:5,128:15:gan")
    assert phases == [Phase(64, 60, "sup"), Phase(96, 5, "gan"), Phase(128, 15, "gan")]
    assert total_epochs(phases) == 80
    assert phase_of(phases, 1) == (0, phases[0])
    assert phase_of(phases, 60) == (0, phases[0])
    assert phase_of(phases, 61) == (1, phases[1])
    assert phase_of(phases, 80) == (2, phases[2])
    with pytest.raises(ValueError, match="past the schedule"):
        phase_of(phases, 81)
    assert phase_spans(phases) == [(1, 60, phases[0]), (61, 65, phases[1]), (66, 80, phases[2])]


@pytest.mark.parametrize("text, message", [
    ("64", "SIZE:EPOCHS"),
    ("64:x", "whole numbers"),
    ("60:3", "multiple of 8"),
    ("64:0", "EPOCHS must be positive"),
    ("64:3:adv", "KIND is one of"),
    ("64:3:sup,", "SIZE:EPOCHS"),
])
def test_parse_schedule_refuses_malformed_phases(text, message):
    with pytest.raises(ValueError, match=message):
        parse_schedule(text)


def test_schedule_that_disagrees_with_size_is_one_error_line(tiny_isic, tmp_path, capsys):
    assert train(tiny_isic, tmp_path / "run", "--schedule", "32:1:sup,128:1") == 2
    err = capsys.readouterr().err
    assert "--size 64 disagrees with --schedule" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(300)
def test_schedule_runs_its_phases_in_order(tiny_isic, tmp_path, capsys):
    # when: a supervised phase at 32, then one at 64, then the adversarial game at 64
    assert train(tiny_isic, tmp_path / "run", "--schedule", "32:1:sup,64:1:sup,64:1:gan",
                 "--train-eval", "2") == 0
    # then: each epoch's log line names its phase; D trains only in the gan phase
    log = read_log(tmp_path / "run")
    assert [(r["phase"], r["size"], r["kind"]) for r in log] == [
        (1, 32, "sup"), (2, 64, "sup"), (3, 64, "gan")]
    assert [r["d_total"] == 0 for r in log] == [True, True, False]
    assert all(set(r["train_eval"]) >= {"jsc", "dsc"} for r in log)
    assert ["val_at_size" in r for r in log] == [True, False, False]
    # and the shipped network runs at the last phase's size
    assert load_generator(tmp_path / "run" / "best.pt").config.input_size == 64
    # and best_gan.pt holds the best adversarial epoch: here the only one
    assert load_generator(tmp_path / "run" / "best_gan.pt").meta["epoch"] == 3
    # and its model card lists every phase, in order, with the hardware it ran on
    out = tmp_path / "w.pt"
    assert card_main(["--run", str(tmp_path / "run"), "--data", str(tiny_isic / "val"),
                      "--out", str(out)]) == 0
    training = json.loads(out.with_suffix(".json").read_text())["training"]
    assert [(p["epochs"], p["size"], p["kind"].split()[0], p["epochs_run"])
            for p in training["phases"]] == [
        ([1, 1], 32, "supervised", 1), ([2, 2], 64, "supervised", 1),
        ([3, 3], 64, "adversarial", 1)]
    assert training["phases"][0]["sample"] == "the whole image shrunk"
    assert "threads" in training["hardware"]
    # and the card ships the best adversarial epoch, and says so
    assert training["best_epoch"] == 3
    assert training["selection"].startswith("best validation JSC over the adversarial epochs")
    # and a file the run does not have is one error line
    capsys.readouterr()
    assert card_main(["--run", str(tmp_path / "run"), "--data", str(tiny_isic / "val"),
                      "--out", str(out), "--from", "nowhere.pt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nowhere.pt" in err[0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("precision", [(), ("--amp",)], ids=["fp32", "bf16"])
def test_resume_inside_a_phase_continues_exactly(tiny_isic, tmp_path, precision):
    # bf16 autocast runs on any CPU (emulated where bf16 is not native), and resumes as exactly
    schedule = ("--schedule", "32:2:sup,64:1:gan", "--lr-schedule", "cosine", "--low-res", "crop",
                *precision)
    # given: the whole run, and the same run stopped after the first of phase 1's two epochs
    assert train(tiny_isic, tmp_path / "a", *schedule) == 0
    assert train(tiny_isic, tmp_path / "b", *schedule, "--stop-after", "1") == 0
    assert len(read_log(tmp_path / "b")) == 1
    # when
    assert train(tiny_isic, tmp_path / "b", *schedule, "--resume") == 0
    # then: epochs 2 and 3 are the uninterrupted run's, loss for loss
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a[1:], b[1:], strict=True):
        for key in ("g_total", "g_jaccard", "d_total", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5), key


def test_low_resolution_samples_are_windows_at_the_view_scale_or_the_whole_image_shrunk():
    # given: a 16-pixel view whose mask numbers its columns (masks are only flipped)
    image = np.zeros((16, 16, 3), np.uint8)
    columns = np.tile(np.arange(16, dtype=np.uint8), (16, 1))
    rng = np.random.default_rng(0)
    shrink = Batches(image[None], columns[None], 1, rng, size=8)
    crop = Batches(image[None], columns[None], 1, rng, size=8, view=16)
    for _ in range(20):
        # when
        ((_, ys),), ((_, yc),) = list(shrink), list(crop)
        # then: the shrunk sample spans the whole width in steps of 2 columns, the window
        # 8 neighbouring columns somewhere in it
        row_s, row_c = ys[0, 0, 0].numpy(), yc[0, 0, 0].numpy()
        assert np.all(np.abs(np.diff(row_s)) == 2)
        assert np.all(np.abs(np.diff(row_c)) == 1)
        assert 0 <= row_c.min() and row_c.max() <= 15


def test_train_bench_measures_each_variant_on_real_batches(tiny_isic, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_main(["--data", str(tiny_isic / "train"), "--sizes", "32,64", "--kinds",
                       "gan,sup", "--precisions", "fp32", "--layouts", "channels_last",
                       "--threads", "1", "--batch-size", "2", "--steps", "1",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(r["size"], r["kind"]) for r in report["variants"]] == [
        (32, "gan"), (32, "sup"), (64, "gan"), (64, "sup")]
    assert all(r["images_per_s"] > 0 and 0 <= r["batch_share"] < 1 for r in report["variants"])
    assert "training step" in capsys.readouterr().err


def test_train_bench_refuses_a_bad_variant_with_one_line(tiny_isic, capsys):
    assert bench_main(["--data", str(tiny_isic / "train"), "--kinds", "gan,fast"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --kinds") and "Traceback" not in err


def test_learning_rate_warms_up_then_follows_the_cosine_over_the_rest():
    args = argparse.Namespace(lr=1e-3, lr_schedule="cosine")
    rates = [learning_rate(args, step, 100, warmup=10) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:10], rates[1:10], strict=False))
    assert rates[10] == pytest.approx(1e-3)  # the cosine starts at the top after the warm-up
    assert rates[55] == pytest.approx(5e-4, rel=0.05) and rates[99] < 1e-5
    assert learning_rate(args, 50, 100) == pytest.approx(5e-4)  # no warm-up: as before


def test_calibrated_statistics_are_the_present_network_s_own():
    # given: a network whose running statistics are far from its present state
    torch.manual_seed(0)
    generator = build_generator(config=SLSNetConfig(input_size=32)).eval()
    for m in generator.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    rng_before = torch.random.get_rng_state()
    # when: statistics measured on one batch of the images
    model = calibrated(generator, images, torch.device("cpu"), batch_size=8)
    # then: every BatchNorm holds the mean and (unbiased) variance of what reaches it when the
    # present network runs on the batch's own statistics, dropout off
    probe = copy.deepcopy(generator).eval()
    seen = {}
    for n, m in probe.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train()
            m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, i[0]))
    with torch.no_grad():
        probe(to_tensor(images))
    norms = dict(model.named_modules())
    assert len(seen) > 10
    for name, x in seen.items():
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=True)
        # float32 sums of n terms in different orders (and one pass against two for the
        # variance): within n·eps of the largest term, far from the stale 3.0
        n = x.numel() // x.shape[1]
        bound = n * torch.finfo(torch.float32).eps
        torch.testing.assert_close(norms[name].running_mean, mean, rtol=0,
                                   atol=bound * x.abs().max().item())
        torch.testing.assert_close(norms[name].running_var, var, rtol=0,
                                   atol=bound * (x ** 2).max().item())
        assert (norms[name].running_mean - 3.0).abs().min() > 100 * bound * x.abs().max()
    # and the original network, its statistics and the random number stream are untouched
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert all(torch.equal(v, generator.state_dict()[k]) for k, v in before.items())
    assert not model.training and calibrated(generator, None, torch.device("cpu")) is generator


def test_statistics_images_are_spread_over_the_whole_set():
    # a set stored in the order it was collected: the sample reaches from its first image to
    # its last, in order, each image once, and a sample as large as the set is the set
    picks = spread(2000, 256)
    assert len(picks) == 256 and picks[0] == 0 and picks[-1] == 1999
    assert np.all(np.diff(picks) >= 7) and np.all(np.diff(picks) <= 8)
    assert list(spread(5, 5)) == list(spread(5, 9)) == [0, 1, 2, 3, 4]
