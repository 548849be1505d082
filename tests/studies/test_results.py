"""Answers as the tables stats.py reads, the results JSON, and the export with arms revealed."""

import importlib.util

import pandas as pd
import pytest

from storyloop.db import session_scope
from storyloop.db.models import Study
from storyloop.studies.errors import StudyError
from storyloop.studies.export import EXPORT_COLUMNS, export_study, read_export
from storyloop.studies.queue import LikertScores, next_study_task, submit_study_task, undo_task
from storyloop.studies.results import LIKERT_COLUMNS, PAIRWISE_COLUMNS, RESULT_KEYS, answer_frames
from tests.studies.conftest import SCENARIOS, add_annotators, folder_study

HAS_STATS = importlib.util.find_spec("storyloop.studies.stats") is not None


def answer_all(url, study, users, answer):
    """Every annotator answers every item they are given with answer(user, task) -> kwargs."""
    for user in users.values():
        while True:
            with session_scope(url) as s:
                task = next_study_task(s, user, study)
                if task is None:
                    break
                submit_study_task(s, task, **answer(user, task))


def frames(url, study):
    with session_scope(url) as s:
        return answer_frames(s, s.get(Study, study))


def test_pairwise_answers_become_the_stats_table_arms_named(settings, tmp_path):
    study = folder_study(settings, tmp_path, k=2, arm_names=("base", "dpo"))
    users = add_annotators(settings, ("ann", "bob"))
    url = settings.db_url
    # both prefer the dpo arm wherever it is shown; ann then skips nothing, bob skips the first item
    answer_all(url, study, users, lambda u, t: {"choice": "left"})
    with session_scope(url) as s:  # ann changes her mind on her last answer: only the new revision counts
        edit = undo_task(s, users["ann"], study)
        submit_study_task(s, edit, choice="tie")
    f = frames(url, study)
    assert list(f.pairwise.columns) == PAIRWISE_COLUMNS and f.likert.empty and f.skipped == 0
    assert len(f.pairwise) == 4 * 2 and sorted(f.pairwise.annotator.unique()) == ["ann", "bob"]
    assert set(f.pairwise.arm_left) | set(f.pairwise.arm_right) == {"base", "dpo"}
    assert (f.pairwise.choice == "tie").sum() == 1 and (f.pairwise.choice == "left").sum() == 7
    assert sorted(f.pairwise.scenario.unique()) == sorted(k for k, *_ in SCENARIOS)


def test_likert_answers_give_one_row_per_criterion(settings, tmp_path):
    study = folder_study(settings, tmp_path, kind="likert", k=1, arm_names=("base", "dpo"))
    users = add_annotators(settings, ("ann",))
    answer_all(settings.db_url, study, users, lambda u, t: {"scores": LikertScores(5, 4, 3)})
    f = frames(settings.db_url, study)
    assert list(f.likert.columns) == LIKERT_COLUMNS and f.pairwise.empty
    assert len(f.likert) == 2 * 2 * 3  # 2 stories x 2 arms, three criteria each
    assert f.likert.groupby("criterion").score.unique().map(list).to_dict() == {"cc": [5], "sc": [4], "sa": [3]}
    assert sorted(f.likert.scenario.unique()) == ["A", "B"]


def test_export_round_trips_every_revision_with_arms_revealed(settings, tmp_path):
    study = folder_study(settings, tmp_path, scenarios=SCENARIOS[:2], k=1, arm_names=("base", "dpo"))
    users = add_annotators(settings, ("ann",))
    url = settings.db_url
    answer_all(url, study, users, lambda u, t: {"skip_reason": "cannot decide"} if t.base_revision == 0 and
               t.item_id % 2 else {"choice": "right"})
    with session_scope(url) as s:
        submit_study_task(s, undo_task(s, users["ann"], study), choice="both_bad")
    tables = {}
    for suffix in ("csv", "parquet"):
        with session_scope(url) as s:
            summary = export_study(s, "st", tmp_path / f"answers.{suffix}")
        tables[suffix] = read_export(summary.path)
        assert (summary.rows, summary.answers) == (3, 2)
    csv, parquet = tables["csv"], tables["parquet"]
    assert list(parquet.columns) == EXPORT_COLUMNS
    pd.testing.assert_frame_equal(csv.drop(columns=["shown_at", "submitted_at"]),
                                  parquet.drop(columns=["shown_at", "submitted_at"]), check_dtype=False)
    for c in ("shown_at", "submitted_at"):  # CSV keeps the UTC instants
        assert (csv[c] == parquet[c]).all() and str(parquet[c].dt.tz) == "UTC"
    answered = parquet[parquet.choice.notna()]
    for _, row in answered.iterrows():  # the arm each side showed, and the arm chosen
        assert {row.arm_left, row.arm_right} == {"base", "dpo"}
        assert row.chosen_arm == ({"right": row.arm_right}.get(row.choice))
    assert parquet.revision.dtype == "Int64" and parquet.cc.isna().all()
    assert sorted(parquet.revision.tolist()) == [1, 1, 2] and parquet.latest.sum() == 2
    assert (parquet.skip_reason == "cannot decide").sum() == (parquet.choice.isna()).sum()


def test_export_refuses_an_unknown_format_and_writes_nothing(settings, tmp_path):
    folder_study(settings, tmp_path, scenarios=SCENARIOS[:1], k=1)
    with session_scope(settings.db_url) as s, pytest.raises(StudyError, match="a .csv or a .parquet"):
        export_study(s, "st", tmp_path / "out.xlsx")
    with session_scope(settings.db_url) as s, pytest.raises(StudyError, match="no study named 'nope'"):
        export_study(s, "nope", tmp_path / "out.csv")
    assert not list(tmp_path.glob("out.*"))


@pytest.mark.skipif(not HAS_STATS, reason="storyloop/studies/stats.py lands with the statistics step")
def test_results_json_has_the_issues_keys(settings, tmp_path):
    from storyloop.studies.results import study_results

    study = folder_study(settings, tmp_path, k=2, arm_names=("base", "dpo"))
    users = add_annotators(settings, ("ann", "bob"))
    with session_scope(settings.db_url) as s:
        arms = {a.id: a.name for a in s.get(Study, study).arms}
    # everyone prefers dpo: the side that shows it
    answer_all(settings.db_url, study, users,
               lambda u, t: {"choice": "left" if arms[t.left_arm_id] == "dpo" else "right"})
    with session_scope(settings.db_url) as s:
        res = study_results(s, "st", n_boot=50)
    assert set(RESULT_KEYS) <= set(res)
    assert res["arms"] == ["base", "dpo"] and res["answers"] == 8
    [(pair, rate)] = res["win_rate"].items()
    assert rate["n"] == 8 and res["ci95"][pair] == rate["ci95"]
    assert rate["win_rate"] == (1.0 if rate["arms"][0] == "dpo" else 0.0)
    assert res["bt_scores"]["dpo"]["score"] > res["bt_scores"]["base"]["score"]
