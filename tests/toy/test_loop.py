"""The loop end to end on the committed toy weights, shrunk to seconds (figures are not asserted)."""

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storyloop.db import session_scope
from storyloop.db.models import (Candidate, DpoRun, Judgment, Round, RunStatus, Study, StudyAnswer, StudyImage,
                                 StudyItem, StudyLease)
from storyloop.demo import setup_demo
from storyloop.generation import reference_gain
from storyloop.studies.results import study_results
from storyloop.toy.loop import (METRIC_NAMES, STUDY, LoopConfig, evaluation_scenarios, round1_scenarios, run_loop,
                                table, validation_scenarios)
from storyloop.toy.picture import story_sheet
from storyloop.toy.study import win_rate_over
from storyloop.toy.world import split_characters

SMALL = LoopConfig(round1_stories=6, eval_stories=2, eval_samples=2, val_stories=1, val_samples=1, candidates=3,
                   steps=10, round1_steps=6, val_steps=6,
                   dpo={**LoopConfig().dpo, **dict(max_steps=2, rank=4, lora_alpha=4, train_batch_size=2, save_steps=1,
                                                   eval_steps=1, train_reference_gain=True)})


def test_the_whole_loop_runs_through_the_real_code_paths(tmp_path):
    result = run_loop(tmp_path / "loop", SMALL, log=lambda m: None, progress=False)
    assert set(result["rows"]) == {"w/o GSA", "w/o DPO", "full"}
    assert all(set(row) == set(METRIC_NAMES) for row in result["rows"].values())
    assert 0 <= result["dpo_win_rate"] <= 1 and len(result["dpo_win_rate_ci95"]) == 2
    assert sorted(result["dpo_validation_win_rate"]) == [1, 2] and result["dpo_step_kept"] in (1, 2)
    items = SMALL.eval_samples * result["held_out_scenarios"]  # one item per held-out scenario and seed
    k = len(SMALL.annotator_noise)
    assert sum(result["dpo_judgements"].values()) == result["study_answers"] == items * k  # every item, k times
    json.dumps({k: v for k, v in result.items() if not k.startswith("_")})
    assert "DPO win rate" in table(result)
    url = f"sqlite:///{(tmp_path / 'loop' / 'storyloop.db').resolve()}"
    with session_scope(url) as s:
        assert [r.name for r in s.scalars(select(Round).order_by(Round.id))] == ["round-1", "round-2"]
        assert s.scalar(select(func.count()).select_from(Judgment)) == 3 * result["round1_scenarios"]
        run = s.scalar(select(DpoRun))
        assert run.status is RunStatus.completed
        # the validation judge's figures are recorded with each eval step, the score is its win rate
        evals = [m.values for m in run.metrics if "eval/score" in m.values]
        assert [v["eval/win_rate"] for v in evals] == [v["eval/score"] for v in evals]
        judged = {v["eval/wins"] + v["eval/ties"] + v["eval/losses"] for v in evals}
        assert len(judged) == 1 and judged.pop() > 0  # every validation frame, at every eval step
        assert [round(v["eval/score"], 4) for v in evals] == [result["dpo_validation_win_rate"][k] for k in (1, 2)]
        round2 = s.scalar(select(Round).where(Round.name == "round-2"))
        assert round2.parent.name == "round-1" and round2.dpo_lora_sha256
        # the DPO adapter's reference gain (asked for here) is saved with the LoRA that round 2 records
        assert (Path(round2.dpo_lora_path) / reference_gain.FILE).exists()
        # the win rate is a pairwise study on round 2, answered through the study queue
        study = s.scalar(select(Study).where(Study.name == result["study"] == STUDY))
        assert study.round_id == round2.id and study.seeds == SMALL.eval_samples and study.answers_per_item == k
        dpo, stage1 = study.arms  # in the order they were created
        assert (dpo.name, dpo.dpo_lora_sha256) == ("dpo", round2.dpo_lora_sha256)
        assert (stage1.name, stage1.dpo_lora_path) == ("stage1", None)
        assert stage1.stage1_lora_sha256 == dpo.stage1_lora_sha256 == round2.stage1_lora_sha256
        assert s.scalar(select(func.count()).select_from(StudyImage)) == 2 * items  # `study generate`: both arms
        answers = list(s.scalars(select(StudyAnswer).join(StudyItem).where(StudyItem.study_id == study.id)))
        assert len(answers) == items * k and s.scalar(select(func.count()).select_from(StudyLease)) == 0
        for a in answers:  # each through a shown task: sides recorded, one revision, the task's idempotency key
            item = s.get(StudyItem, a.item_id)
            assert {a.left_arm_id, a.right_arm_id} == {item.arm_a_id, item.arm_b_id} == {dpo.id, stage1.id}
            assert a.choice is not None and a.revision == 1 and a.idempotency_key == f"s-{a.user_id}-{item.id}-1"
        assert len({a.user_id for a in answers}) == k
        dpo_rate = win_rate_over(study_results(s, STUDY, seed=SMALL.seed), "dpo", "stage1")
        assert result["dpo_win_rate"] == round(dpo_rate["win_rate"], 4)
        assert result["dpo_win_rate_ci95"] == [round(v, 4) for v in dpo_rate["ci95"]]
        assert result["dpo_judgements"] == {k_: dpo_rate[k_] for k_ in ("wins", "ties", "losses", "both_bad")}
    sheet = story_sheet(result["_scenarios"], result["_images"], result["_scenarios"][0].story_id,
                        tmp_path / "sheet.png")
    assert sheet.stat().st_size > 0


def test_demo_sets_up_accounts_and_a_generated_round(tmp_path):
    setup = setup_demo(tmp_path / "demo", stories=1, candidates=2, steps=2, progress=False)
    assert set(setup.credentials) == {"admin", "annotator"}
    with session_scope(setup.settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(Candidate)) == setup.candidates > 0


def test_round1_characters_must_be_a_known_pool():
    with pytest.raises(ValueError, match="round1_characters"):
        LoopConfig(round1_characters="held-out")


def test_round1_reference_guidance_is_checked_before_any_round():
    with pytest.raises(ValueError, match="reference_guidance_scales"):
        LoopConfig(round1_reference_guidance=(1.0, -3.0))


@pytest.mark.parametrize("pool", ["training", "all"])
def test_each_pool_of_stories_keeps_to_its_characters(pool):
    """Round 1 draws from its pool; DPO is validated on characters no model or round has seen, never held out."""
    config = LoopConfig(round1_characters=pool, round1_stories=40, val_stories=20)
    training, held_out = (set(chars) for chars in split_characters())
    stories = round1_scenarios(config)
    round1 = {sc.asked.protagonist for sc in stories}
    shown = {c for sc in stories for f in (sc.asked, *sc.references) for _, c in f.cast}  # companions too
    validation = {c for sc in validation_scenarios(config, stories) for _, c in sc.asked.cast}
    assert not shown & held_out and (round1 <= training) == (pool == "training")
    assert validation and not validation & (training | held_out | shown)


def test_the_default_validation_stories_are_the_ones_the_readme_figures_used():
    """The validation readings in docs/toy-world-experiments.md (and scripts/toy_guidance_ceiling.py) use this set:
    since issue #19, half the frames with a companion and no character that round 1 shows (runs 1-11 and
    sessions 3-11 used the 83 scenarios of fingerprint 2d563df06b5f7553)."""
    config = LoopConfig()
    validation = validation_scenarios(config, round1_scenarios(config))
    fingerprint = repr([(sc.key, sc.prompt, sc.asked.protagonist) for sc in validation])
    assert len(validation) == 81 and hashlib.sha256(fingerprint.encode()).hexdigest()[:16] == "e900dba035b2083f"
    assert sum(sc.asked.companion is not None for sc in validation) == 40


def test_the_default_sets_hold_enough_two_character_targets():
    config = LoopConfig()
    for scenarios in (round1_scenarios(config), evaluation_scenarios(config)):
        pairs = [sc for sc in scenarios if sc.asked.companion is not None]
        assert len(pairs) >= 0.4 * len(scenarios)
        assert all(sc.characters == [sc.asked.protagonist.key(), sc.asked.companion.key()] for sc in pairs)
    with pytest.raises(ValueError, match="companion_share"):
        LoopConfig(companion_share=-0.1)
