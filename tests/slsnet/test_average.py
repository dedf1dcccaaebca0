"""slsnet.average, and the epochs a run keeps for it (slsnet.train --keep-epochs)."""

import json

import pytest
import torch
from support.isic_runs import train
from support.nets import save_constant

from slsnet import load_generator
from slsnet.average import averaged
from slsnet.average import main as average_main
from slsnet.batchnorm import calibrated, spread
from slsnet.card import main as card_main
from slsnet.data import find_pairs, load_arrays


@pytest.fixture(scope="module")
def kept_run(tiny_isic, tmp_path_factory):
    """A two-epoch run on ``tiny_isic`` that kept each epoch's generator."""
    run = tmp_path_factory.mktemp("kept") / "run"
    assert train(tiny_isic, run, "--epochs", "2", "--keep-epochs") == 0
    return run


@pytest.mark.timeout(300)
def test_a_run_keeps_each_epochs_generator_as_scored(kept_run):
    assert sorted(p.name for p in (kept_run / "epochs").iterdir()) == ["001.pt", "002.pt"]
    last = load_generator(kept_run / "last_generator.pt").state_dict()
    kept = load_generator(kept_run / "epochs" / "002.pt")
    assert kept.meta["epoch"] == 2
    for name, tensor in kept.state_dict().items():
        assert torch.equal(tensor, last[name]), name


@pytest.mark.timeout(300)
def test_the_average_is_the_mean_weights_with_statistics_measured_afresh(kept_run, tiny_isic,
                                                                         tmp_path, capsys):
    paths = [kept_run / "epochs" / "001.pt", kept_run / "epochs" / "002.pt"]
    out = tmp_path / "mean.pt"
    # when
    assert average_main(["--data", str(tiny_isic), "--out", str(out), "--bn-images", "3",
                         *map(str, paths)]) == 0
    # then: every weight is the mean of the two; the statistics are those of the mean network
    # measured on the spread training images, not the mean of the two networks' statistics
    assert capsys.readouterr().out.strip() == (
        f"{out}: the mean of 2 generators (epochs 1-2), BatchNorm statistics measured on 3 "
        "training images")
    a, b = (load_generator(p) for p in paths)
    mean = load_generator(out)
    pairs = find_pairs(tiny_isic / "train")
    images, _ = load_arrays([pairs[i] for i in spread(len(pairs), 3)], 64)
    expected = calibrated(averaged([a, b]), images, torch.device("cpu")).state_dict()
    sa, sb = a.state_dict(), b.state_dict()
    for name, tensor in mean.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(tensor, expected[name])
        elif tensor.is_floating_point():  # (x + y) / 2 of two float32 is exact up to rounding
            torch.testing.assert_close(tensor, (sa[name] + sb[name]) / 2, rtol=2**-23, atol=0)
    moved = mean.state_dict()["head.weight"]
    assert not torch.equal(moved, sa["head.weight"]) and not torch.equal(moved, sb["head.weight"])
    assert [s["epoch"] for s in mean.meta["averaged"]] == [1, 2]
    assert mean.meta["epoch"] == 2


def test_bad_inputs_are_one_error_line_and_write_nothing(kept_run, tiny_isic, tmp_path, capsys):
    one, two = str(kept_run / "epochs" / "001.pt"), str(kept_run / "epochs" / "002.pt")
    other_size = str(save_constant(tmp_path / "at128.pt", 0.0))  # the default 128×128 network
    out = tmp_path / "mean.pt"
    data = ["--data", str(tiny_isic), "--out", str(out)]
    cases = [
        ([*data, one], "error: averaging needs at least two weights files"),
        ([*data, one, str(tmp_path / "missing.pt")],
         f"error: weights file not found: {tmp_path / 'missing.pt'}"),
        (["--data", str(tiny_isic), "--out", one, one, two],
         f"error: --out {one} is one of the files to average"),
        ([*data, one, other_size], "error: weights of different networks cannot be averaged"),
        (["--data", str(tmp_path), "--out", str(out), one, two],
         f"error: {tmp_path / 'train' / 'images'} is not a folder"),
        ([*data, "--bn-images", "0", one, two], "error: --bn-images must be at least 1, not 0"),
    ]
    for argv, message in cases:
        assert average_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err, (argv, err)
    assert not out.exists()


@pytest.mark.timeout(300)
def test_the_model_card_of_an_average_names_what_was_averaged(kept_run, tiny_isic, tmp_path):
    # given: the mean of a run's two epochs, beside them in the run's folder
    epochs = [str(kept_run / "epochs" / f"00{e}.pt") for e in (1, 2)]
    assert average_main(["--data", str(tiny_isic), "--out", str(kept_run / "average.pt"),
                         "--bn-images", "4", *epochs]) == 0
    # when it is made the weights to ship
    out = tmp_path / "shipped.pt"
    assert card_main(["--run", str(kept_run), "--from", "average.pt",
                      "--data", str(tiny_isic / "val"), "--out", str(out)]) == 0
    # then its card says which generators it is the mean of, and how its statistics were made
    averaged_of = json.loads(out.with_suffix(".json").read_text())["training"]["averaged"]
    assert [(s["path"], s["epoch"]) for s in averaged_of["of"]] == [(epochs[0], 1), (epochs[1], 2)]
    assert averaged_of["statistics"] == "measured on 4 training images spread over the set"
