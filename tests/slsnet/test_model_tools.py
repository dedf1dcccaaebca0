"""evaluate, predict, the weights loader and the model card, on hand-made and real weights."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support.nets import save_constant

from slsnet import SLSNetConfig, build_generator, load_generator
from slsnet.card import main as card_main
from slsnet.checkpoint import WeightsError, save_generator
from slsnet.evaluate import main as evaluate_main
from slsnet.gan import GANTrainer, Hyper
from slsnet.predict import main as predict_main


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
    weights = save_constant(tmp_path / "all.pt", 10.0)
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
            "--per-image",
            str(tmp_path / "per_image.csv"),
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
    # the median of two images is their mean
    assert result["median"]["jsc"] == pytest.approx(0.125)
    assert cv2.imread(str(tmp_path / "o.png")) is not None
    assert "paper" in capsys.readouterr().out
    # and: A's lesion is a quarter of the image, all of it predicted; B is lesion-free
    with open(tmp_path / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["lesion_area"], r["predicted_area"], r["jsc"]) for r in rows] == [
        ("IMD001.bmp", "0.25000", "1.00000", "0.25000"),
        ("IMD002.bmp", "0.00000", "1.00000", "0.00000")]
    assert result["by_lesion_size"] == [
        {"from": 0.0, "to": 0.05, "n": 1, "jsc": 0.0, "area_ratio": None},
        {"from": 0.2, "to": 0.4, "n": 1, "jsc": 0.25, "area_ratio": 4.0}]
    # and an output that cannot be written is one error line
    assert evaluate_main(["--data", str(data), "--weights", str(weights), "--device", "cpu",
                          "--per-image", str(tmp_path / "no" / "such" / "dir.csv")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_evaluate_zoomed_over_the_lesion_scores_the_view_of_a_scope_held_close(
        tmp_path, quarter_lesion, capsys):
    # given: one 10×20 image whose lesion is its left quarter, and a net that says "all lesion"
    data = quarter_lesion
    weights = str(save_constant(tmp_path / "all.pt", 10.0))

    def jsc(*flags: str) -> float:
        out = tmp_path / "m.json"
        assert evaluate_main(["--data", str(data), "--weights", weights, "--device", "cpu",
                              "--json", str(out), *flags]) == 0
        return json.loads(out.read_text())["metrics"]["jsc"]

    # when / then: whole, the lesion is a quarter of the view; 2x closer (a 5×10 window moved
    # inside the image at the left edge), half of it
    assert jsc() == pytest.approx(0.25)
    assert jsc("--zoom", "2") == pytest.approx(0.5)
    assert "2x over each lesion" in " ".join(capsys.readouterr().out.split())  # title wraps
    # and a zoom below 1 is one error line
    assert evaluate_main(["--data", str(data), "--weights", weights, "--zoom", "0.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --zoom must be at least 1, not 0.5"


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
    weights = save_constant(tmp_path / "all.pt", 10.0)
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
    assert card["training"]["arithmetic"] == "fp32"
    assert card["evaluation"]["n"] == 2
    assert set(card["evaluation"]["metrics"]) == {"acc", "dsc", "jsc", "sen", "spe", "jsc_th"}
    tta = card["evaluation"]["tta"]  # what --tta gives with these weights, and how to check it
    assert set(tta["metrics"]) == set(card["evaluation"]["metrics"])
    assert tta["command"] == f"{card['evaluation']['command']} --tta"
    assert any("1710.05006" in c for c in card["citations"])
    (phase,) = card["training"]["commands"]
    assert phase["from_epoch"] == 0
    assert phase["command"].startswith("python -m slsnet.train --data")
    assert card["training"]["initialised_from"] is None
    assert "crop" not in card["training"]["augmentation"]
    assert "validation split" in card["training"]["selection"]
    # each epoch's scores, to four places, so that a later run can be set beside these weights
    logged = json.loads((trained_run / "log.jsonl").read_text().splitlines()[0])
    assert card["training"]["curve"] == [{
        "epoch": 1, "size": 64, "kind": "gan", "lr": logged["lr"],
        "train_jsc": round(logged["train_eval"]["jsc"], 4),
        "val_jsc": round(logged["val"]["jsc"], 4), "val_dsc": round(logged["val"]["dsc"], 4)}]


@pytest.mark.timeout(300)
def test_model_card_from_the_last_checkpoint(trained_run, tiny_isic, tmp_path):
    # when: the run's last epoch is exported as training left it (this run kept no average)
    out = tmp_path / "last.pt"
    argv = ["--run", str(trained_run), "--from", "last.pt", "--data", str(tiny_isic / "val"),
            "--out", str(out)]
    assert card_main(argv) == 0
    # then: its weights and running statistics are G's in the checkpoint, bit for bit
    kept = torch.load(trained_run / "last.pt", weights_only=True)["trainer"]["generator"]
    state = load_generator(out).state_dict()
    assert state.keys() == kept.keys()
    assert all(torch.equal(state[k], kept[k]) for k in kept)
    card = json.loads(out.with_suffix(".json").read_text())
    assert "running BatchNorm statistics" in card["training"]["selection"]
    assert "validation split" not in card["training"]["selection"]
    assert card["training"]["best_epoch"] == 1


def test_training_checkpoint_loads_as_its_moving_average(tmp_path):
    # given: a checkpoint whose moving average differs from G, statistics included
    config = SLSNetConfig(input_size=32)
    trainer = GANTrainer(config, Hyper(ema_decay=0.9), torch.device("cpu"))
    with torch.no_grad():
        for t in trainer.averaged.state_dict().values():
            if t.is_floating_point():
                t.add_(0.25)
    path = tmp_path / "last.pt"
    torch.save({"trainer": trainer.state(), "epoch": 7, "config": config.to_dict()}, path)
    # when
    gen = load_generator(path)
    # then: the average's tensors, not G's, and meta says what was loaded
    averaged = trainer.averaged.state_dict()
    assert all(torch.equal(v, averaged[k]) for k, v in gen.state_dict().items())
    assert not torch.equal(next(gen.parameters()), next(trainer.generator.parameters()))
    assert gen.meta == {"epoch": 7, "statistics": "running", "weights": "moving average"}
    assert not gen.training


def test_damaged_training_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"trainer": {"generator": {"nope": torch.zeros(1)}}, "config": {}}, path)
    with pytest.raises(WeightsError, match="not a training checkpoint of this architecture"):
        load_generator(path)


def test_shipped_weights_load_and_match_their_card():
    weights = Path(__file__).resolve().parents[2] / "weights" / "slsnet_isic2017.pt"
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


def test_load_generator_without_a_path_reads_the_shipped_weights(tmp_path, monkeypatch):
    # given the shipped weights of this checkout, and a working directory elsewhere
    from slsnet.checkpoint import shipped_weights

    weights = shipped_weights()
    if weights is None:
        pytest.skip("no shipped weights in this checkout")
    monkeypatch.chdir(tmp_path)
    # when the generator is loaded without naming a file
    gen = load_generator()
    # then it holds the shipped tensors
    named = load_generator(weights)
    for (k, a), (_, b) in zip(gen.state_dict().items(), named.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_load_generator_without_shipped_weights_says_so(monkeypatch):
    monkeypatch.setattr("slsnet.checkpoint.shipped_weights", lambda: None)
    with pytest.raises(WeightsError, match="no shipped weights"):
        load_generator()
