"""slsnet.progress: a hand-written run folder worked by hand, a real run, and bad folders."""

import json

import pytest

from slsnet.progress import main as progress_main


def _record(epoch: int, size: int, kind: str, at: float, train_seconds: float, jsc: float):
    return {"epoch": epoch, "size": size, "kind": kind, "lr": 1e-3, "images_per_s": 10.0,
            "train_seconds": train_seconds, "time": at, "train_eval": {"jsc": jsc + 0.1},
            "val": {"jsc": jsc, "dsc": 2 * jsc / (1 + jsc), "sen": 0.9}}


@pytest.fixture
def stopped_run(tmp_path):
    """Epochs 1-4 of a 5-epoch schedule, with a stop and a resume between epochs 2 and 3."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.json").write_text(json.dumps(
        {"schedule": "64:2:sup,128:2:sup,128:1:gan", "size": 128, "epochs": 5}))
    log = [_record(1, 64, "sup", 1000.0, 50.0, 0.50),
           _record(2, 64, "sup", 1060.0, 50.0, 0.60),     # 60 s after epoch 1
           _record(3, 128, "sup", 9000.0, 100.0, 0.70),   # after a stop: not an epoch's time
           _record(4, 128, "sup", 9120.0, 100.0, 0.68)]   # 120 s after epoch 3
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return run


def test_progress_reads_phases_times_and_the_best_epoch(stopped_run, tmp_path, capsys):
    # when
    assert progress_main([str(stopped_run), "--last", "3", "--json",
                          str(tmp_path / "p.json")]) == 0
    # then
    out = json.loads((tmp_path / "p.json").read_text())
    assert (out["epoch"], out["epochs"]) == (4, 5)
    assert [(p["epochs"], p["run"], p["val_jsc_last"], p["epoch_seconds"])
            for p in out["phases"]] == [([1, 2], 2, 0.60, 60.0), ([3, 4], 2, 0.68, 120.0),
                                        ([5, 5], 0, None, None)]
    assert out["best"] == {"epoch": 3, "val_jsc": 0.70}
    assert out["best_gan"] is None  # no adversarial epoch yet
    assert [r["epoch"] for r in out["recent"]] == [2, 3, 4]
    assert {(r["d_loss"], r["g_adversarial"]) for r in out["recent"]} == {(None, None)}  # sup
    assert out["val_jsc_per_epoch"] == pytest.approx((0.68 - 0.60) / 2)
    # the one epoch left is adversarial, a kind this run has not timed: said, not guessed
    assert out["seconds_left"] == 0 and out["not_timed"] == ["1 at 128 gan"]
    printed = " ".join(capsys.readouterr().out.split())
    assert "epoch 4 of 5" in printed and "not timed yet: 1 at 128 gan" in printed
    # and a summary that cannot be written is one error line after the tables
    assert progress_main([str(stopped_run), "--json", str(tmp_path / "no" / "p.json")]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot write {tmp_path / 'no'}")


def test_progress_of_a_finished_real_run(trained_run, tmp_path, capsys):
    assert progress_main([str(trained_run), "--json", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1 of 1" in printed and "the run has ended" in printed
    assert "best: epoch 1" in printed
    assert "best adversarial: epoch 1, val JSC" in printed
    assert (trained_run / "best_gan.pt").is_file()
    # its one epoch is adversarial: the game's two losses are the log's, to the digit
    (epoch,) = json.loads((tmp_path / "p.json").read_text())["recent"]
    logged = json.loads((trained_run / "log.jsonl").read_text().splitlines()[0])
    assert epoch["kind"] == "gan" and epoch["d_loss"] == logged["d_total"] > 0
    assert epoch["g_adversarial"] == logged["g_adversarial"] > 0


def test_progress_of_a_folder_that_is_not_a_run_is_one_error_line(tmp_path, capsys):
    assert progress_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path} is not a training run folder: args.json is missing"]
    (tmp_path / "args.json").write_text("{")
    (tmp_path / "log.jsonl").write_text("")
    assert progress_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: unreadable run file")


def test_progress_sets_another_run_beside_this_one(stopped_run, tmp_path, capsys):
    # given a second run that has epochs 2-3 of the first's 1-4, a little better at each
    other = tmp_path / "other"
    other.mkdir()
    (other / "args.json").write_text((stopped_run / "args.json").read_text())
    log = [_record(2, 64, "sup", 500.0, 50.0, 0.62), _record(3, 128, "sup", 560.0, 100.0, 0.75)]
    (other / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    # when
    assert progress_main([str(stopped_run), "--against", str(other), "--json",
                          str(tmp_path / "p.json")]) == 0
    # then the epochs both hold are set side by side, val's difference this run's minus theirs
    against = json.loads((tmp_path / "p.json").read_text())["against"]
    assert against["run"] == str(other)
    assert [(r["epoch"], r["val_jsc"], r["other_val_jsc"]) for r in against["epochs"]] == [
        (2, 0.60, 0.62), (3, 0.70, 0.75)]
    assert [r["val_difference"] for r in against["epochs"]] == pytest.approx([-0.02, -0.05])
    assert [r["other_train_jsc"] for r in against["epochs"]] == pytest.approx([0.72, 0.85])
    printed = " ".join(capsys.readouterr().out.split())
    assert "A val - B val" in printed and "-0.0500" in printed
    # and runs without an epoch in common say so; a missing one is one error line
    (other / "log.jsonl").write_text(json.dumps(_record(9, 128, "gan", 1.0, 1.0, 0.5)) + "\n")
    assert progress_main([str(stopped_run), "--against", str(other)]) == 0
    assert "have no epoch in common" in " ".join(capsys.readouterr().out.split())
    assert progress_main([str(stopped_run), "--against", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_progress_sets_a_run_beside_weights_by_their_card(stopped_run, tmp_path, capsys):
    # given weights whose card keeps their run's curve (epochs 2-3), and weights whose card does
    # not (written before cards kept one): no run folder of theirs on this machine
    weights = tmp_path / "shipped.pt"
    weights.write_bytes(b"not read: only the card beside it is")
    curve = [{"epoch": e, "size": s, "kind": "sup", "lr": 1e-3, "train_jsc": t, "val_jsc": v,
              "val_dsc": 0.8} for e, s, t, v in ((2, 64, 0.72, 0.62), (3, 128, None, 0.75))]
    weights.with_suffix(".json").write_text(json.dumps({"training": {"curve": curve}}))
    older = tmp_path / "older.pt"
    older.write_bytes(b"")
    older.with_suffix(".json").write_text(json.dumps({"training": {"phases": []}}))
    # when
    assert progress_main([str(stopped_run), "--against", str(weights), "--json",
                          str(tmp_path / "p.json")]) == 0
    # then its epochs are set beside the run's, as another run's would be
    epochs = json.loads((tmp_path / "p.json").read_text())["against"]["epochs"]
    assert [(r["epoch"], r["val_jsc"], r["other_val_jsc"], r["other_train_jsc"])
            for r in epochs] == [(2, 0.60, 0.62, 0.72), (3, 0.70, 0.75, None)]
    assert [r["val_difference"] for r in epochs] == pytest.approx([-0.02, -0.05])
    capsys.readouterr()
    # and weights whose card has no curve are one error line
    assert progress_main([str(stopped_run), "--against", str(older)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {older}: its model card (older.json) "
                                               "holds no per-epoch curve")
