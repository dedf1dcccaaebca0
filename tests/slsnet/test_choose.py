"""slsnet.choose: the shipping rule worked by hand, and the command on hand-made weights."""

import json

import pytest
from support.nets import save_constant

from slsnet.choose import Rule
from slsnet.choose import main as choose_main

BASE = {1.0: 0.76, 2.0: 0.74, 3.0: 0.72}  # bars: whole 0.77, 2x 0.73, 3x 0.71


def test_rule_needs_a_gain_whole_and_no_loss_close_up():
    rule = Rule()  # gain 0.01, slack 0.01, tie 0.002
    assert rule.bars(BASE) == pytest.approx({1.0: 0.77, 2.0: 0.73, 3.0: 0.71})
    assert rule.shortfalls({1.0: 0.775, 2.0: 0.735, 3.0: 0.715}, BASE) == []
    assert rule.shortfalls({1.0: 0.765, 2.0: 0.74, 3.0: 0.70}, BASE) == [
        "whole 0.7650 < 0.7700", "3x 0.7000 < 0.7100"]


def test_rule_picks_the_best_whole_and_breaks_near_ties_close_up():
    rule = Rule()
    a = {1.0: 0.775, 2.0: 0.735, 3.0: 0.715}
    worse_3x = {1.0: 0.800, 2.0: 0.750, 3.0: 0.700}  # best whole, but not eligible
    # within 0.002 of a's whole JSC (0.0015 lower) and better at 3x: it wins
    near = {1.0: 0.7735, 2.0: 0.732, 3.0: 0.730}
    assert rule.winner({"a": a, "worse_3x": worse_3x, "near": near}, BASE) == "near"
    # 0.003 lower is not a tie: the higher whole JSC wins
    behind = {**near, 1.0: 0.772}
    assert rule.winner({"a": a, "behind": behind}, BASE) == "a"
    assert rule.winner({"worse_3x": worse_3x}, BASE) is None
    # a rule with a larger tie lets the close-up decide
    assert Rule(tie=0.005).winner({"a": a, "behind": behind}, BASE) == "behind"


def test_choose_scores_every_candidate_and_names_the_winner(tmp_path, quarter_lesion, capsys):
    # given: a baseline that finds no lesion, a candidate that calls everything lesion, and
    # another that finds none
    nothing = str(save_constant(tmp_path / "nothing.pt", -10.0))
    everything = str(save_constant(tmp_path / "everything.pt", 10.0))
    also_nothing = str(save_constant(tmp_path / "also_nothing.pt", -10.0))
    # when
    rc = choose_main([everything, also_nothing, "--data", str(quarter_lesion), "--baseline",
                      nothing, "--device", "cpu", "--json", str(tmp_path / "c.json")])
    # then: "everything" scores 1/4 whole, 1/2 at 2x (a 5×10 view at the left edge) and 5/7 at
    # 3x (a 3×7 view with the lesion in its 5 left columns); the baseline scores 0
    assert rc == 0
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["scores"][everything]["whole"]["jsc"] == pytest.approx(0.25)
    assert out["scores"][everything]["2x"]["jsc"] == pytest.approx(0.5)
    assert out["scores"][everything]["3x"]["jsc"] == pytest.approx(5 / 7)
    assert out["scores"][nothing]["whole"]["jsc"] == 0.0
    assert out["bars"] == pytest.approx({"whole": 0.01, "2x": -0.01, "3x": -0.01})
    assert out["eligible"] == [everything] and out["winner"] == everything
    # beside the rule: one image, so its score is the median; "everything" beats the baseline
    # on it by 0.25 and "also_nothing" ties it
    assert out["whole_image_spread"] == {
        nothing: {"median_jsc": 0.0},
        everything: {"median_jsc": pytest.approx(0.25), "better": 1, "worse": 0},
        also_nothing: {"median_jsc": 0.0, "better": 0, "worse": 0}}
    assert out["verdicts"] == {nothing: "baseline", everything: "eligible, wins",
                               also_nothing: "not eligible: whole 0.0000 < 0.0100"}
    printed = capsys.readouterr().out
    assert f"winner on still images: {everything};" in printed
    assert f"--weights {everything}\n" in printed  # the temporal benchmark to run next
    assert "+1 / -0" in printed


def test_choose_keeps_the_baseline_when_none_is_eligible(tmp_path, quarter_lesion, capsys):
    everything = str(save_constant(tmp_path / "everything.pt", 10.0))
    nothing = str(save_constant(tmp_path / "nothing.pt", -10.0))
    assert choose_main([nothing, "--data", str(quarter_lesion), "--baseline", everything,
                        "--zooms", "2", "--json", str(tmp_path / "c.json")]) == 0
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["winner"] is None and out["eligible"] == []
    assert set(out["scores"][nothing]) == {"whole", "2x"}
    assert f"no candidate is eligible: {everything} stays" in capsys.readouterr().out


def test_choose_bad_inputs_are_one_error_line(tmp_path, quarter_lesion, capsys):
    weights = str(save_constant(tmp_path / "w.pt", 0.0))
    data = ["--data", str(quarter_lesion), "--baseline", weights]
    assert choose_main([str(tmp_path / "missing.pt"), *data]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.pt" in err[0]
    assert choose_main([weights, *data]) == 2
    assert "cannot be a candidate too" in capsys.readouterr().err
    assert choose_main([weights, "--data", str(tmp_path / "nowhere"), "--baseline",
                        str(save_constant(tmp_path / "b.pt", 1.0))]) == 2
    assert capsys.readouterr().err.startswith("error:")
    with pytest.raises(SystemExit) as stop:
        choose_main([weights, *data, "--zooms", "0.5"])
    assert stop.value.code == 2
    assert "each zoom must be above 1" in capsys.readouterr().err
