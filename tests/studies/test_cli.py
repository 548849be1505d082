"""`storyloop study` end to end through the CLI: create, generate, list/show, results, export, bad input."""

import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from storyloop.cli.main import app
from storyloop.db import session_scope
from storyloop.db.models import Study, StudyImage
from tests.studies.conftest import SCENARIOS, folder_arm, scenarios_file


@pytest.fixture
def cli(tmp_path, db_url, monkeypatch):
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STORYLOOP_DB_URL", db_url)
    monkeypatch.setenv("STORYLOOP_ADMIN_PASSWORD", "a-long-admin-password")
    runner = CliRunner()

    def run(*args, expect=0):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == expect, result.output
        result.flat = " ".join(result.output.split())  # rich wraps long lines
        return result

    run("init")
    run.url = db_url
    return run


def test_study_commands_end_to_end(cli, tmp_path, models):
    two = SCENARIOS[:2]
    src = scenarios_file(tmp_path / "src", two)
    uno = folder_arm(tmp_path / "uno", [k for k, *_ in two])
    out = cli("study", "create", "s1", "--scenarios", src, "--arm", f"dpo=base={models / 'flux'},stage1={models / 'stage1'}",
              "--arm", f"uno={uno}", "-k", "2").flat
    assert "Created pairwise study 's1' on round 'study-s1': 2 arms (dpo, uno), 2 scenario(s), 2 item(s)" in out
    gen = cli("study", "generate", "s1", "--steps", "2", "--height", "32", "--width", "32",
              "--max-sequence-length", "16", "--json").stdout
    summary = json.loads(gen.strip().splitlines()[-1])
    assert (summary["generated"], summary["skipped"]) == (2, 0)
    assert "4/4" in cli("study", "list").flat
    shown = cli("study", "show", "s1").flat
    assert "dpo" in shown and "uno" in shown and "2/2" in shown
    csv = tmp_path / "answers.csv"
    assert "Exported 0 row(s)" in cli("study", "export", "s1", "--out", csv).flat and csv.exists()
    assert "a .csv or a .parquet" in cli("study", "export", "s1", "--out", tmp_path / "a.txt", expect=1).flat


def test_bad_study_input_is_one_line_and_writes_nothing(cli, tmp_path, models):
    src = scenarios_file(tmp_path / "src", SCENARIOS)
    uno = folder_arm(tmp_path / "uno", [k for k, *_ in SCENARIOS[:3]])
    model = f"m=base={models / 'flux'}"
    cases = [(["--arm", model, "--arm", f"uno={uno}"], "no image for scenario 'b1'"),
             (["--arm", model, "--arm", model], "two arms are named 'm'"),
             (["--arm", model, "--arm", "x=/nowhere"], "is not a folder"),
             (["--arm", model], "needs at least 2 arm")]
    for args, message in cases:
        result = cli("study", "create", "bad", "--scenarios", src, *args, expect=1)
        assert message in result.flat and "Traceback" not in result.output
    cli("round", "create", "empty")
    assert "round 'empty' has no scenarios" in cli("study", "create", "bad", "--round", "empty", "--arm", model,
                                                   "--arm", f"n=base={models / 'flux'}", expect=1).flat
    with session_scope(cli.url) as s:
        assert s.scalar(select(func.count()).select_from(Study)) == 0
        assert s.scalar(select(func.count()).select_from(StudyImage)) == 0
    assert not (tmp_path / "data" / "store").exists() or not any((tmp_path / "data" / "store").rglob("*.png"))
    assert "no study named 'nope'" in cli("study", "generate", "nope", expect=1).flat


@pytest.mark.parametrize("kind", ["pairwise", "likert"])
def test_study_results_prints_a_table_and_ends_with_the_json(cli, tmp_path, kind):
    from storyloop.db.models import Role
    from storyloop.db.users import add_user
    from storyloop.settings import Settings
    from storyloop.studies.queue import LikertScores, next_study_task, submit_study_task
    from tests.studies.conftest import folder_study

    settings = Settings.resolve(tmp_path / "data", cli.url)
    study = folder_study(settings, tmp_path, kind=kind, k=1, arm_names=("base", "dpo"))
    with session_scope(cli.url) as s:
        user = add_user(s, "ann", "password123", Role.annotator).id
    answer = {"choice": "left"} if kind == "pairwise" else {"scores": LikertScores(4, 3, 5)}
    while True:
        with session_scope(cli.url) as s:
            task = next_study_task(s, user, study)
            if task is None:
                break
            submit_study_task(s, task, **answer)
    res = json.loads(cli("study", "results", "st", "--json", "--n-boot", "20").stdout.strip().splitlines()[-1])
    assert {"arms", "win_rate", "ci95", "bt_scores", "position_bias", "likert", "answers"} <= set(res)
    assert res["answers"] == 4 and res["arms"] == ["base", "dpo"]
    assert bool(res["win_rate"]) == (kind == "pairwise") and bool(res["likert"]) == (kind == "likert")
    text = cli("study", "results", "st", "--n-boot", "20").flat
    assert "4 answer(s)" in text and ("base vs dpo" in text or "cc 4.00" in text)


@pytest.mark.parametrize("kind", ["pairwise", "likert"])
def test_study_gold_lists_items_and_sets_their_answers(cli, tmp_path, kind):
    from storyloop.db.models import StudyGoldAnswer, StudyItem
    from storyloop.settings import Settings
    from tests.studies.conftest import folder_study

    folder_study(Settings.resolve(tmp_path / "data", cli.url), tmp_path, kind=kind, k=1, arm_names=("base", "dpo"))
    with session_scope(cli.url) as s:
        keys = sorted(s.scalars(select(StudyItem.key)))
    listing = cli("study", "gold", "st").flat
    assert all(k in listing for k in keys)
    if kind == "pairwise":
        cli("study", "gold", "st", keys[0], "--prefer", "dpo")
        cli("study", "gold", "st", keys[1], "--both-bad")
        assert "no arm 'uno'" in cli("study", "gold", "st", keys[0], "--prefer", "uno", expect=1).flat
        assert "a pairwise gold answer" in cli("study", "gold", "st", keys[0], "--scores", "1,2,3", expect=1).flat
        assert "dpo" in cli("study", "gold", "st").flat and "both_bad" in cli("study", "gold", "st").flat
    else:
        cli("study", "gold", "st", keys[0], "--scores", "4,5,3")
        assert "4,5,3" in cli("study", "gold", "st").flat
        assert "whole number from 1 to 5" in cli("study", "gold", "st", keys[0], "--scores", "4,9,3", expect=1).flat
    assert "exactly one of" in cli("study", "gold", "st", keys[0], expect=1).flat
    assert "has no item 'nope'" in cli("study", "gold", "st", "nope", "--tie", expect=1).flat
    with session_scope(cli.url) as s:
        assert s.scalar(select(func.count()).select_from(StudyGoldAnswer)) == (2 if kind == "pairwise" else 1)
