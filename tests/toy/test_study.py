"""Scripted annotators answering a pairwise study through the study queue and keys (toy/study.py)."""

from dataclasses import replace

import pandas as pd
import pytest
from sqlalchemy import func, select

from storyloop.db import session_scope
from storyloop.db.models import StudyAnswer, StudyArm, StudyChoice, StudyItem, StudyLease
from storyloop.db.rounds import create_round
from storyloop.studies import stats
from storyloop.studies.arms import parse_arms
from storyloop.studies.create import StudyOptions, create_study
from storyloop.toy.annotate import ScriptedAnnotator
from storyloop.toy.assets import READERS
from storyloop.toy.readers import load_readers
from storyloop.toy.render import render
from storyloop.toy.scenarios import make_scenarios, write_scenarios_file
from storyloop.toy.study import answer_study, results_of, win_rate_over
from storyloop.toy.world import STYLES, split_characters


@pytest.fixture(scope="module")
def readers():
    return load_readers(READERS)


def truth_vs_stranger_study(settings, tmp_path, k: int):
    """Round "r" of four held-out scenarios; arm "truth" draws what each asks, arm "stranger" another character
    in another style (it fails character consistency)."""
    held_out = split_characters()[1]
    scenarios = make_scenarios(held_out, 2, seed=5, prefix="t", targets_per_story=2)
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r", write_scenarios_file(scenarios, tmp_path / "inputs"))
    for arm in ("truth", "stranger"):
        (tmp_path / arm).mkdir()
    for sc in scenarios:
        render(sc.asked).save(tmp_path / "truth" / f"{sc.key}.png")
        other = next(c for c in held_out if all(getattr(c, a) != getattr(sc.asked.protagonist, a)
                                                  for a in ("shape", "color", "hat")))
        style = next(st for st in STYLES if st != sc.asked.style)
        render(replace(sc.asked, protagonist=other, style=style)).save(tmp_path / "stranger" / f"{sc.key}.png")
    arms = parse_arms([f"truth={tmp_path / 'truth'}", f"stranger={tmp_path / 'stranger'}"])
    with session_scope(settings.db_url) as s:
        create_study(s, settings.store_dir, "ts", arms, round_name="r", options=StudyOptions(answers_per_item=k))
    return {sc.key: sc for sc in scenarios}


def test_scripted_annotators_answer_every_item_k_times_through_the_queue(settings, tmp_path, readers):
    truth = truth_vs_stranger_study(settings, tmp_path, k=2)
    annotators = [ScriptedAnnotator("judge-1", 0.0, 0), ScriptedAnnotator("judge-2", 0.0, 1)]
    assert answer_study(settings, "ts", annotators, truth, readers) == 2 * len(truth)
    assert answer_study(settings, "ts", annotators, truth, readers) == 0  # the queue is empty: nothing more
    with session_scope(settings.db_url) as s:
        arm = dict(s.execute(select(StudyArm.name, StudyArm.id)).all())
        rows = list(s.scalars(select(StudyAnswer)))
        assert len(rows) == 2 * len(truth) and s.scalar(select(func.count()).select_from(StudyLease)) == 0
        for a in rows:
            item = s.get(StudyItem, a.item_id)
            assert {a.left_arm_id, a.right_arm_id} == {item.arm_a_id, item.arm_b_id}
            assert a.idempotency_key == f"s-{a.user_id}-{a.item_id}-1" and a.revision == 1
            # noise-free annotators press the key of the side that shows the asked character
            assert a.choice is (StudyChoice.left if a.left_arm_id == arm["truth"] else StudyChoice.right)
        assert {a.left_arm_id for a in rows} == set(arm.values())  # sides drawn per annotator, both used
    rate = win_rate_over(results_of(settings, "ts"), "truth", "stranger")
    assert rate["win_rate"] == 1.0 and rate["wins"] == rate["n"] == 2 * len(truth)


def test_a_noisy_annotator_sometimes_presses_the_other_key(settings, tmp_path, readers):
    truth = truth_vs_stranger_study(settings, tmp_path, k=1)
    answer_study(settings, "ts", [ScriptedAnnotator("judge-3", 0.5, 0)], truth, readers)
    rate = win_rate_over(results_of(settings, "ts"), "truth", "stranger")
    assert rate["n"] == len(truth) and rate["win_rate"] < 1.0


def test_win_rate_over_reads_the_pair_either_way_round():
    answers = pd.DataFrame([("i1", "s1", "u", "a", "b", "left"), ("i2", "s1", "u", "b", "a", "left"),
                            ("i3", "s2", "u", "a", "b", "tie"), ("i4", "s2", "u", "b", "a", "right"),
                            ("i5", "s3", "u", "a", "b", "both_bad")],
                           columns=["item", "scenario", "annotator", "arm_left", "arm_right", "choice"])
    ab = {"win_rate": stats.win_rates(answers, arms=["a", "b"], seed=0)}
    ba = {"win_rate": stats.win_rates(answers, arms=["b", "a"], seed=0)}
    assert list(ab["win_rate"]) == ["a vs b"] and list(ba["win_rate"]) == ["b vs a"]
    a_over_b = win_rate_over(ab, "a", "b")
    assert a_over_b["win_rate"] == pytest.approx(3 / 5) and (a_over_b["wins"], a_over_b["losses"]) == (2, 1)
    inverted = win_rate_over(ba, "a", "b")
    assert inverted["win_rate"] == pytest.approx(a_over_b["win_rate"])
    assert inverted["ci95"] == pytest.approx(a_over_b["ci95"])
    assert {k: inverted[k] for k in ("wins", "losses", "ties", "both_bad", "n")} == \
        {k: a_over_b[k] for k in ("wins", "losses", "ties", "both_bad", "n")}
    with pytest.raises(KeyError):
        win_rate_over(ab, "a", "c")
