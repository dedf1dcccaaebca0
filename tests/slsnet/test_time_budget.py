"""--time-budget: durations, epoch times from a log, and a real run that stops between epochs."""

import pytest
from support.isic_runs import read_log, train

import slsnet.time_budget as time_budget
from slsnet.time_budget import TimeBudget, parse_duration


def test_durations_are_read_with_their_units():
    assert parse_duration("2h40m") == 9600
    assert parse_duration("90m") == parse_duration("1.5h") == 5400
    assert parse_duration("45s") == 45
    for text in ("90", "2x", "", "m", "1h 2q"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(text)


def test_budget_admits_an_epoch_only_when_it_should_end_in_time(monkeypatch):
    # given: a clock, a 100 s budget, and a log whose two adversarial epochs are 30 s apart
    now = [0.0]
    monkeypatch.setattr(time_budget.time, "monotonic", lambda: now[0])
    log = [{"epoch": e, "size": 128, "kind": "gan", "time": t, "train_seconds": 25.0}
           for e, t in ((1, 1000.0), (2, 1030.0))]
    budget = TimeBudget(100.0, log)
    # when / then: 40 s left holds a 30 s epoch, 25 s does not
    now[0] = 60.0
    assert budget.estimate(128, "gan") == 30.0 and budget.fits(128, "gan")
    now[0] = 75.0
    assert not budget.fits(128, "gan")
    # a kind not timed yet runs while any budget is left, and is timed once it has run
    assert budget.estimate(64, "sup") is None and budget.fits(64, "sup")
    budget.timed(64, "sup", 10.0)
    assert budget.estimate(64, "sup") == 10.0
    now[0] = 100.0
    assert not budget.fits(64, "sup")


def test_a_run_stops_cleanly_before_an_epoch_that_would_overrun(tiny_isic, tmp_path, monkeypatch,
                                                                 capsys):
    # given: epochs that, as timed, take two hours each, and a one-hour budget
    real_timed = TimeBudget.timed
    monkeypatch.setattr(TimeBudget, "timed",
                        lambda self, size, kind, seconds: real_timed(self, size, kind, 7200.0))
    run = tmp_path / "run"
    # when
    assert train(tiny_isic, run, "--epochs", "3", "--time-budget", "1h") == 0
    # then: the first epoch ran (not timed yet), the second was not started
    assert [r["epoch"] for r in read_log(run)] == [1]
    assert "stopping after epoch 1 (continue with --resume)" in " ".join(
        capsys.readouterr().err.split())
    # and the run goes on from there
    monkeypatch.undo()
    assert train(tiny_isic, run, "--epochs", "3", "--resume") == 0
    assert [r["epoch"] for r in read_log(run)] == [1, 2, 3]
