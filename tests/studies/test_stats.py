"""Study statistics against cases whose answer is known."""

import numpy as np
import pandas as pd
import pytest

from storyloop.studies.stats import (ELO_SCALE, LIKERT_COLUMNS, PAIRWISE_COLUMNS, bradley_terry, likert_agreement,
                                     likert_summary, pairwise_agreement, position_bias, win_rates)


def answer(item, scenario, winner, loser, choice="win", annotator="u1", winner_left=True):
    """One pairwise answer; `choice` "win" means `winner` was chosen, on whichever side it was shown."""
    left, right = (winner, loser) if winner_left else (loser, winner)
    if choice == "win":
        choice = "left" if winner_left else "right"
    return {"item": item, "scenario": scenario, "annotator": annotator, "arm_left": left, "arm_right": right,
            "choice": choice}


def split(wins, losses, scenario_of):
    """A beats B `wins` times and loses `losses` times; sides alternate; answer i is in scenario_of(i)."""
    rows = [answer(i, scenario_of(i), "A", "B", winner_left=i % 2 == 0) for i in range(wins)]
    rows += [answer(wins + i, scenario_of(wins + i), "B", "A", winner_left=i % 2 == 0) for i in range(losses)]
    return pd.DataFrame(rows)


def from_strengths(elo, n_scenarios, per_scenario, seed):
    """Answers drawn from Bradley–Terry with the given Elo-scale strengths, sides at random."""
    rng = np.random.default_rng(seed)
    arms, rows = list(elo), []
    for s in range(n_scenarios):
        for r in range(per_scenario):
            a, b = rng.choice(arms, 2, replace=False)
            a_wins = rng.random() < 1 / (1 + 10 ** ((elo[b] - elo[a]) / 400))
            winner, loser = (a, b) if a_wins else (b, a)
            rows.append(answer(f"{s}/{r}", s, winner, loser, winner_left=bool(rng.random() < 0.5)))
    return pd.DataFrame(rows)


# --- win rates -----------------------------------------------------------------------------------

def test_seventy_thirty_split_gives_point_seven_with_an_interval_that_excludes_half():
    result = win_rates(split(70, 30, lambda i: i % 50), n_boot=500)
    assert list(result) == ["A vs B"]
    r = result["A vs B"]
    assert r["arms"] == ["A", "B"] and r["win_rate"] == pytest.approx(0.7)
    assert (r["n"], r["wins"], r["losses"], r["ties"], r["both_bad"]) == (100, 70, 30, 0, 0)
    lo, hi = r["ci95"]
    assert 0.5 < lo < 0.7 < hi


def test_the_pair_is_named_in_arms_order_and_its_rate_is_the_other_way_round():
    r = win_rates(split(70, 30, lambda i: i % 50), arms=["B", "A"], n_boot=50)["B vs A"]
    assert r["arms"] == ["B", "A"] and r["win_rate"] == pytest.approx(0.3)
    assert (r["wins"], r["losses"]) == (30, 70)


def test_ties_count_half_and_both_bad_counts_half_and_on_its_own():
    rows = [answer(0, 0, "A", "B"), answer(1, 1, "A", "B", winner_left=False),
            answer(2, 2, "A", "B", choice="tie"), answer(3, 3, "B", "A", choice="both_bad")]
    r = win_rates(pd.DataFrame(rows), n_boot=50)["A vs B"]
    assert r["win_rate"] == pytest.approx((2 + 0.5 + 0.5) / 4)
    assert (r["n"], r["wins"], r["losses"], r["ties"], r["both_bad"]) == (4, 2, 0, 1, 1)


def test_interval_widens_when_the_same_answers_cluster_in_few_scenarios():
    spread = win_rates(split(70, 30, lambda i: i % 50), n_boot=500)["A vs B"]
    # Two scenarios: one where A won all 50, one where it won 20 of 50.
    clustered = win_rates(split(70, 30, lambda i: 0 if i < 50 else 1), n_boot=500)["A vs B"]
    assert clustered["win_rate"] == spread["win_rate"] == pytest.approx(0.7)
    width = lambda r: r["ci95"][1] - r["ci95"][0]
    assert width(clustered) > 2 * width(spread)
    assert clustered["ci95"][0] <= 0.5  # drawing the 20-of-50 scenario twice gives 0.4


def test_every_pair_that_met_is_reported_in_arms_order_and_others_are_not():
    rows = pd.concat([split(6, 4, lambda i: i), pd.DataFrame([answer(99, 99, "C", "A")])])
    result = win_rates(rows, arms=["C", "B", "A"], n_boot=50)
    assert list(result) == ["C vs A", "B vs A"]  # B and C never met
    assert result["C vs A"]["win_rate"] == 1.0


def test_arms_given_leave_out_answers_about_other_arms():
    rows = pd.concat([split(6, 4, lambda i: i), pd.DataFrame([answer(99, 99, "C", "A")])])
    result = win_rates(rows, arms=["A", "B"], n_boot=50)
    assert list(result) == ["A vs B"] and result["A vs B"]["n"] == 10
    assert list(bradley_terry(rows, arms=["A", "B"], n_boot=5)) == ["A", "B"]


def test_same_seed_same_interval_and_another_arm_does_not_move_a_pairs_interval():
    answers = split(70, 30, lambda i: i % 50)
    first = win_rates(answers, n_boot=200, seed=3)
    assert win_rates(answers, n_boot=200, seed=3) == first
    assert win_rates(answers, n_boot=200, seed=4)["A vs B"]["ci95"] != first["A vs B"]["ci95"]
    more = pd.concat([answers, pd.DataFrame([answer(999, 999, "C", "A")])])
    assert win_rates(more, n_boot=200, seed=3)["A vs B"] == first["A vs B"]


# --- Bradley–Terry -------------------------------------------------------------------------------

def test_bradley_terry_recovers_a_known_order_with_ordered_intervals_and_mean_1000():
    answers = from_strengths({"low": 800, "high": 1200, "mid": 1000}, n_scenarios=60, per_scenario=6, seed=7)
    bt = bradley_terry(answers, n_boot=60)
    assert set(bt) == {"low", "mid", "high"}
    assert np.mean([v["score"] for v in bt.values()]) == pytest.approx(1000, abs=1e-9)
    ranked = sorted(bt, key=lambda a: bt[a]["score"], reverse=True)
    assert ranked == ["high", "mid", "low"]
    for better, worse in [("high", "mid"), ("mid", "low")]:
        assert bt[better]["ci95"][0] > bt[worse]["ci95"][0]
        assert bt[better]["ci95"][1] > bt[worse]["ci95"][1]
    for v in bt.values():
        assert v["ci95"][0] <= v["score"] <= v["ci95"][1]
    # The scale: the known gaps are 200 points; the fit lands near them.
    assert bt["high"]["score"] - bt["low"]["score"] == pytest.approx(400, abs=100)


def test_bradley_terry_on_two_arms_matches_the_win_rate_odds():
    bt = bradley_terry(split(70, 30, lambda i: i % 50), n_boot=20)
    # Two arms: P(A beats B) = sigma(gap), so the gap is the log-odds of the win rate (the prior is weak).
    assert bt["A"]["score"] - bt["B"]["score"] == pytest.approx(ELO_SCALE * np.log(0.7 / 0.3), abs=0.5)
    assert bt["A"]["score"] + bt["B"]["score"] == pytest.approx(2000)


def test_an_arm_that_always_wins_gets_a_finite_score():
    bt = bradley_terry(split(10, 0, lambda i: i), n_boot=20)
    assert np.isfinite([bt["A"]["score"], *bt["A"]["ci95"]]).all()
    assert bt["A"]["score"] > bt["B"]["score"] + 400


def test_bradley_terry_needs_two_arms():
    rows = pd.DataFrame([answer(0, 0, "A", "B")])
    assert bradley_terry(rows, arms=["A"], n_boot=5) == {}


# --- position bias -------------------------------------------------------------------------------

def test_a_perfectly_left_biased_annotator_is_flagged():
    rows = pd.DataFrame([answer(i, i % 10, *(("A", "B") if i % 2 else ("B", "A"))) for i in range(40)])
    result = position_bias(rows, n_boot=200)
    assert result == {"left_share": 1.0, "ci95": [1.0, 1.0], "n": 40, "flagged": True}


def test_a_balanced_design_is_not_flagged_and_ties_are_not_decisive():
    rows = [answer(i, i // 2, "A", "B", winner_left=i % 2 == 0) for i in range(40)]
    rows += [answer(100 + i, i, "A", "B", choice="tie") for i in range(5)]
    result = position_bias(pd.DataFrame(rows), n_boot=200)
    assert result["left_share"] == 0.5 and result["n"] == 40 and not result["flagged"]
    assert result["ci95"][0] <= 0.5 <= result["ci95"][1]


# --- agreement -----------------------------------------------------------------------------------

def test_annotators_who_chose_the_same_arm_on_swapped_sides_agree_perfectly():
    rows = [
        answer("i1", "s1", "A", "B", annotator="u1", winner_left=True),
        answer("i1", "s1", "A", "B", annotator="u2", winner_left=False),  # A shown right, chosen
        answer("i2", "s2", "B", "A", annotator="u1", winner_left=False),
        answer("i2", "s2", "B", "A", annotator="u2", winner_left=True),
        answer("i3", "s3", "A", "B", annotator="u1", choice="tie"),
        answer("i3", "s3", "B", "A", annotator="u2", choice="both_bad"),  # neither preferred: agrees with a tie
        answer("i4", "s4", "A", "B", annotator="u1"),  # one annotator: not a unit
    ]
    result = pairwise_agreement(pd.DataFrame(rows))
    assert result == {"krippendorff_alpha": 1.0, "exact": 1.0, "units": 3}
    # The same choices read as sides ("left"/"right") would disagree on i1 and i2.
    assert [r["choice"] for r in rows[:4]] == ["left", "right", "right", "left"]


def test_annotators_who_chose_different_arms_disagree():
    rows = [answer("i1", "s1", "A", "B", annotator="u1"), answer("i1", "s1", "B", "A", annotator="u2"),
            answer("i2", "s2", "A", "B", annotator="u1"), answer("i2", "s2", "A", "B", annotator="u2")]
    result = pairwise_agreement(pd.DataFrame(rows))
    assert result["exact"] == 0.5 and result["units"] == 2 and result["krippendorff_alpha"] < 1


# --- Likert --------------------------------------------------------------------------------------

def rating(item, scenario, arm, criterion, score, annotator="u1"):
    return {"item": item, "scenario": scenario, "annotator": annotator, "arm": arm, "criterion": criterion,
            "score": score}


def test_likert_means_and_distributions_are_exact_on_a_hand_made_table():
    rows = [rating(f"a{i}", f"story{i}", "A", "cc", s) for i, s in enumerate([5, 4, 4, 3])]
    rows += [rating(f"b{i}", f"story{i}", "B", "sa", s) for i, s in enumerate([1, 1, 2])]
    rows += [rating(f"b{i}", f"story{i}", "B", "cc", s) for i, s in enumerate([2, 5])]
    summary = likert_summary(pd.DataFrame(rows), n_boot=200)
    assert list(summary) == ["A", "B"] and list(summary["B"]) == ["cc", "sa"]  # the paper's order
    a = summary["A"]["cc"]
    assert a["mean"] == 4.0 and a["n"] == 4
    assert a["distribution"] == {"1": 0, "2": 0, "3": 1, "4": 2, "5": 1}
    assert 3.0 <= a["ci95"][0] <= 4.0 <= a["ci95"][1] <= 5.0
    b = summary["B"]["sa"]
    assert b["mean"] == pytest.approx(4 / 3) and b["n"] == 3
    assert b["distribution"] == {"1": 2, "2": 1, "3": 0, "4": 0, "5": 0}
    assert summary["B"]["cc"]["mean"] == 3.5
    assert list(likert_summary(pd.DataFrame(rows), arms=["B"], n_boot=10)) == ["B"]


def test_likert_agreement_is_one_when_annotators_give_the_same_scores_and_none_without_pairs():
    scores = [1, 2, 4, 5]
    rows = [rating(i, i, "A", "cc", s, annotator=u) for u in ("u1", "u2") for i, s in enumerate(scores)]
    rows += [rating(i, i, "A", "sc", s, annotator="u1") for i, s in enumerate(scores)]
    assert likert_agreement(pd.DataFrame(rows)) == {"cc": 1.0, "sc": None}
    # The second annotator reverses the order of the first: systematic disagreement.
    off = [rating(i, i, "A", "cc", s, annotator="u2") for i, s in enumerate(reversed(scores))]
    mixed = [r for r in rows if r["annotator"] == "u1" and r["criterion"] == "cc"] + off
    assert likert_agreement(pd.DataFrame(mixed))["cc"] < 0


# --- empty and bad input -------------------------------------------------------------------------

def test_empty_input_gives_empty_results():
    for empty in (pd.DataFrame(), pd.DataFrame(columns=PAIRWISE_COLUMNS), None):
        assert win_rates(empty) == {} and bradley_terry(empty) == {}
        assert position_bias(empty) == {"left_share": None, "ci95": None, "n": 0, "flagged": False}
        assert pairwise_agreement(empty) == {"krippendorff_alpha": None, "exact": None, "units": 0}
    for empty in (pd.DataFrame(), pd.DataFrame(columns=LIKERT_COLUMNS)):
        assert likert_summary(empty) == {} and likert_agreement(empty) == {}


@pytest.mark.parametrize("fn", [win_rates, bradley_terry, position_bias, pairwise_agreement])
def test_bad_pairwise_input_is_refused_with_the_column_named(fn):
    good = answer(0, 0, "A", "B")
    with pytest.raises(ValueError, match="choice.*'maybe'"):
        fn(pd.DataFrame([good, {**good, "choice": "maybe"}]))
    with pytest.raises(ValueError, match="missing column.*scenario"):
        fn(pd.DataFrame([good]).drop(columns="scenario"))
    with pytest.raises(ValueError, match="arm_left/arm_right.*itself"):
        fn(pd.DataFrame([{**good, "arm_right": "A"}]))
    with pytest.raises(ValueError, match="column annotator has 1 empty"):
        fn(pd.DataFrame([good, {**good, "annotator": None}]))


@pytest.mark.parametrize("fn", [likert_summary, likert_agreement])
def test_bad_likert_input_is_refused_with_the_column_named(fn):
    good = rating(0, 0, "A", "cc", 3)
    for bad in (6, 0, 2.5, "x"):
        with pytest.raises(ValueError, match=f"score.*{bad}.*outside 1..5"):
            fn(pd.DataFrame([good, {**good, "score": bad}]))
    with pytest.raises(ValueError, match="missing column.*criterion"):
        fn(pd.DataFrame([good]).drop(columns="criterion"))


def test_an_item_answered_with_two_different_arm_pairs_is_refused():
    rows = [answer("i1", "s1", "A", "B", annotator="u1"), answer("i1", "s1", "A", "C", annotator="u2")]
    with pytest.raises(ValueError, match="item: 'i1'"):
        pairwise_agreement(pd.DataFrame(rows))


def test_n_boot_below_one_is_refused():
    with pytest.raises(ValueError, match="n_boot"):
        win_rates(split(1, 1, lambda i: i), n_boot=0)
