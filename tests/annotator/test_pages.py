"""Each page's logic through Streamlit's AppTest: login, roles, judging, skips, edits, research pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

import storyloop.annotator
from storyloop.annotator import ui
from storyloop.db import session_scope
from storyloop.db.migrate import alembic_config
from storyloop.db.models import Asset, Candidate, Judgment, Outcome
from storyloop.db.assets import asset_path
from tests.annotator.conftest import PASSWORD, log_in

APP = str(Path(storyloop.annotator.__file__).parent / "app.py")
PAGES = ui.PAGES_DIR.relative_to(Path(APP).parent)  # where the page files are, for switch_page
RESEARCH_PAGES = ["rounds", "progress", "agreement", "gallery", "export", "runs"]


@pytest.fixture
def app(small_round, monkeypatch):
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(small_round.settings.data_dir))
    monkeypatch.setenv("STORYLOOP_DB_URL", small_round.settings.db_url)

    def start(username: str | None = None, password: str = PASSWORD) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=30).run()
        if username is not None:
            login(at, username, password)
        return at
    return start


def login(at: AppTest, username: str, password: str = PASSWORD) -> AppTest:
    return log_in(at, username, password)


def press(at: AppTest, key: str) -> AppTest:
    return at.button(key=key).click().run()


def task_key(at: AppTest) -> str:
    return next(b.key for b in at.button if b.key and b.key.startswith("enter-"))[len("enter-"):]


def judgments(url: str) -> list[Judgment]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(Judgment).order_by(Judgment.id)))
        for j in rows:
            j.labels  # load while the session is open
        return rows


def logged_out(at: AppTest) -> bool:
    """The page a session without a login gets: a link to the login form (the route that sets the cookie),
    which its browser is sent to; no button, no page of the app."""
    return (not at.button and not at.metric and not at.exception
            and any("[Log in](/login" in m.value for m in at.markdown))


# The form's words, its throttling and its cookie are the login route's (test_web.py, test_browser_sessions.py):
# the app's part is to let in only a live login's token.
def test_a_refused_login_leaves_the_session_logged_out(app):
    for name, password in (("ann", "not-the-password"), ("nobody", PASSWORD)):
        assert logged_out(app(name, password))


def test_a_new_session_that_asks_for_a_page_goes_through_the_login(app):
    """A typed URL, or a tab reconnecting after a server restart, starts a session on a page: app.py must
    still run first. (With the pages in a `pages/` folder Streamlit ran the file alone: the research
    pages opened for anyone, and Annotate failed with KeyError: 'user'.)"""
    for page in ["annotate", "history", *RESEARCH_PAGES]:
        at = AppTest.from_file(APP, default_timeout=30)
        at.switch_page(f"{PAGES}/{page}.py").run()
        assert logged_out(at), page


@pytest.mark.parametrize("end", ["disable", "new password", "new role"])
def test_an_ended_login_sends_the_session_to_the_form_with_the_reason(app, small_round, end):
    from storyloop.db.models import Role
    from storyloop.db.users import set_active, set_password, set_role

    at = app("ann")
    assert not logged_out(at)
    with session_scope(small_round.settings.db_url) as s:
        {"disable": lambda: set_active(s, "ann", False), "new password": lambda: set_password(s, "ann", "pass-word-2"),
         "new role": lambda: set_role(s, "ann", Role.researcher)}[end]()
    at.run()
    assert logged_out(at) and any("[Log in](/login?m=ended)" in m.value for m in at.markdown)
    assert [i.value for i in at.info] == ["Your session has ended; please log in again."]


def test_annotator_judges_a_scenario_with_the_keys_and_it_is_stored_once(app, small_round):
    at = app("ann")
    key = task_key(at)
    sid = small_round.scenarios[0]
    assert any("frame 0: Mia waves" in m.value for m in at.markdown)
    press(at, f"toggle-{key}-2")          # candidate #2 fails consistency
    press(at, f"enter-{key}")             # -> anatomy
    press(at, f"enter-{key}")             # -> aesthetics
    assert at.button(key=f"enter-{key}").label == "Submit"
    press(at, f"enter-{key}")             # nothing ranked yet: a warning, not silence
    assert any("Nothing to submit yet" in w.value for w in at.warning) and not judgments(small_round.settings.db_url)
    press(at, f"toggle-{key}-3")          # #3 is the best
    assert at.button(key=f"enter-{key}").label == "Submit"
    press(at, f"enter-{key}")
    [j] = judgments(small_round.settings.db_url)
    assert (j.scenario_id, j.outcome, j.revision, j.idempotency_key) == (sid, Outcome.ranked, 1, key)
    by_pos = {j.shown_order.index(l.candidate_id) + 1: l for l in j.labels}
    assert by_pos[2].consistency_pass is False and by_pos[3].aesthetics_rank == 1
    assert task_key(at) != key  # the next scenario is on screen
    assert any("frame 1" in m.value for m in at.markdown)
    assert [t.value for t in at.toast] == [f"Saved: ranked. Press U to change it."]
    # nothing but the page itself: no object rendered by Streamlit's "magic" (a help table, a stray None)
    assert not at.get("help_info") and not any(m.value.strip() in ("None", "") for m in at.markdown)


def test_a_researcher_lands_on_progress_and_holds_no_lease(app, small_round):
    from storyloop.db.models import Lease

    at = app("rita")
    assert [m.label for m in at.metric][:2] == ["Judgments", "Scenarios complete"]  # Progress, not Annotate
    assert not any(b.key and b.key.startswith("enter-") for b in at.button)
    with session_scope(small_round.settings.db_url) as s:
        assert s.scalar(select(Lease)) is None
    at.switch_page(f"{PAGES}/annotate.py").run()  # asked for work: now a scenario is leased
    assert any(b.key and b.key.startswith("enter-") for b in at.button)


def test_annotator_sees_only_the_annotate_and_history_pages(app):
    at = app("ann")
    for page in RESEARCH_PAGES:
        with pytest.raises(Exception):
            at.switch_page(f"{PAGES}/{page}.py").run()


def test_researcher_pages_render_tables_for_the_round(app, small_round):
    at = app("ann")
    key = task_key(at)
    press(at, f"enter-{key}"), press(at, f"enter-{key}"), press(at, f"toggle-{key}-1"), press(at, f"enter-{key}")
    at = app("rita")
    for page in RESEARCH_PAGES:
        at.switch_page(f"{PAGES}/{page}.py").run()
        assert not at.exception, (page, at.exception)
    at.switch_page(f"{PAGES}/progress.py").run()
    assert at.metric[0].value == "1 / 6"
    assert at.dataframe[1].value.annotator.tolist() == ["ann"]
    at.switch_page(f"{PAGES}/agreement.py").run()
    assert at.dataframe[0].value.criterion.tolist() == ["consistency", "anatomy", "best pick", "outcome"]
    at.switch_page(f"{PAGES}/gallery.py").run()
    assert any("Aggregated outcome: ranked" in m.value for m in at.markdown)
    assert len(at.image) == 4  # one reference, three candidates
    at.switch_page(f"{PAGES}/export.py").run()
    assert len(at.dataframe[0].value) == 3  # one judgment, three candidates


def test_runs_page_shows_every_run_its_curves_and_why_one_failed(app, small_round):
    from storyloop.db.models import ArmKind, DpoMetric, DpoRun, RunStatus, Study, StudyArm, StudyKind

    with session_scope(small_round.settings.db_url) as s:
        done = DpoRun(round_id=small_round.round_id, status=RunStatus.completed, config={"beta": 2000.0},
                      pair_set_sha256="a" * 64, code_version="test", artifact_path="/runs/dpo/lora")
        failed = DpoRun(round_id=small_round.round_id, status=RunStatus.failed, config={"beta": 5.0},
                        pair_set_sha256="b" * 64, code_version="test", failure_reason="CUDA out of memory")
        s.add_all([done, failed])
        s.flush()
        for step in (1, 2, 3):
            s.add(DpoMetric(run_id=done.id, step=step, values={
                "loss": 0.69 - 0.1 * step, "rewards/accuracies": 0.5 + 0.1 * step, "rewards/margins": 0.01 * step,
                "grad_norm": 1.0, "learning_rate": 1e-4, "eval/loss": 0.7 - 0.05 * step}))
        done_id, failed_id = done.id, failed.id
        study = Study(name="dpo-vs-stage1", kind=StudyKind.pairwise, round_id=small_round.round_id)
        study.arms = [StudyArm(name="dpo", kind=ArmKind.model, base_model="b", reference_guidance_scale=1.0,
                               dpo_lora_path="/runs/dpo/lora"),
                      StudyArm(name="old", kind=ArmKind.model, base_model="b", reference_guidance_scale=1.0,
                               dpo_lora_path="/runs/other/lora")]
        s.add(study)
    at = app("rita")
    at.switch_page(f"{PAGES}/runs.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table.run.tolist() == [failed_id, done_id] and table.status.tolist() == ["failed", "completed"]
    assert table.set_index("run").loc[done_id, "steps"] == 3
    assert table.set_index("run").loc[done_id, "studies"] == "dpo-vs-stage1 (dpo)"  # the study that used its LoRA
    assert any("CUDA out of memory" in e.value for e in at.error)  # the newest run, shown first
    at.selectbox(key="runs_page_run").set_value(done_id).run()
    assert not at.error and not at.exception
    with session_scope(small_round.settings.db_url) as s:
        from storyloop.annotator.runs import run_curves

        curves = run_curves(s, done_id)
    assert set(curves.metric) == {"loss", "rewards/accuracies", "rewards/margins", "grad_norm", "eval/loss"}
    assert curves[curves.metric == "loss"].step.tolist() == [1, 2, 3]


def test_missing_candidate_image_shows_a_placeholder_and_can_be_skipped(app, small_round):
    settings = small_round.settings
    with session_scope(settings.db_url) as s:
        asset = s.get(Asset, s.get(Candidate, small_round.candidates[small_round.scenarios[0]][1]).asset_id)
        asset_path(settings.store_dir, asset).unlink()
    at = app("ann")
    assert any("missing from the store" in w.value for w in at.warning)
    assert any("Image missing from the store" in m.value for m in at.markdown)
    key = task_key(at)
    press(at, f"skip-{key}")
    press(at, f"reason-{key}-1")
    [j] = judgments(settings.db_url)
    assert j.outcome == Outcome.skipped and j.skip_reason == "an image is missing or broken"
    at = app("rita")  # Export says how many of its judgments are skips (Progress leaves them out)
    at.switch_page(f"{PAGES}/export.py").run()
    assert any("**1** current judgments in this round, **1** of them skips" in m.value for m in at.markdown)


def test_skip_with_a_typed_reason(app, small_round):
    at = app("ann")
    key = task_key(at)
    press(at, f"skip-{key}")
    at.text_input(key=f"skip-text-{key}").input("two people in the reference").run()
    press(at, f"skiptext-{key}")
    assert judgments(small_round.settings.db_url)[0].skip_reason == "two people in the reference"


def test_an_edit_sets_the_unfinished_scenario_aside_and_gives_it_back_with_its_marks(app, small_round):
    at = app("ann")
    key = task_key(at)
    press(at, f"enter-{key}"), press(at, f"enter-{key}"), press(at, f"toggle-{key}-1"), press(at, f"enter-{key}")
    nxt = task_key(at)
    press(at, f"toggle-{nxt}-2"), press(at, f"enter-{nxt}")  # #2 inconsistent, now at anatomy
    press(at, "undo")
    edit = task_key(at)
    assert any("Editing your judgment" in i.value for i in at.info)
    press(at, f"cancel-{edit}")
    assert task_key(at) == nxt
    draft = at.session_state["task"].draft
    assert draft.step.value == "anatomy" and draft.status(draft.order[1]) == "inconsistent"


def test_a_reload_or_second_tab_resumes_the_leased_scenario_with_its_marks(app, small_round):
    at = app("ann")
    key = task_key(at)
    press(at, f"toggle-{key}-2"), press(at, f"enter-{key}")  # #2 inconsistent, now at anatomy
    press(at, f"toggle-{key}-1")                              # #1 bad anatomy
    again = app("ann")  # a new session: nothing of the first one's state
    assert task_key(again) == key
    assert any('sl-step on">2 · Anatomical integrity' in m.value for m in again.markdown)
    assert [again.button(key=f"toggle-{key}-{pos}").label for pos in (1, 2, 3)] == [
        "1 · bad anatomy", "2 · inconsistent", "3 · anatomy ok"]
    press(again, f"enter-{key}"), press(again, f"enter-{key}")  # #3, the only survivor, wins
    [j] = judgments(small_round.settings.db_url)
    by_pos = {j.shown_order.index(l.candidate_id) + 1: l for l in j.labels}
    assert (by_pos[1].anatomy_pass, by_pos[2].consistency_pass, by_pos[3].aesthetics_rank) == (False, False, 1)
    assert not any(b.label.endswith(("inconsistent", "bad anatomy")) for b in app("ann").button)  # next: blank


def test_undo_reopens_the_last_judgment_and_stores_a_new_revision(app, small_round):
    at = app("ann")
    key = task_key(at)
    press(at, f"toggle-{key}-1"), press(at, f"toggle-{key}-2"), press(at, f"toggle-{key}-3")
    press(at, f"enter-{key}"), press(at, f"enter-{key}")  # all bad
    press(at, "undo")
    assert any("Editing your judgment" in i.value for i in at.info)
    edit = task_key(at)
    assert edit.endswith("-2")
    press(at, f"back-{edit}")
    press(at, f"toggle-{edit}-1")  # #1 was consistent after all
    press(at, f"enter-{edit}"), press(at, f"enter-{edit}"), press(at, f"enter-{edit}")
    first, second = judgments(small_round.settings.db_url)
    assert (first.revision, first.outcome, second.revision, second.outcome) == (1, Outcome.all_bad, 2, Outcome.ranked)


def test_history_lists_own_judgments_and_opens_one_for_editing(app, small_round):
    at = app("bob")
    key = task_key(at)
    press(at, f"enter-{key}"), press(at, f"enter-{key}"), press(at, f"toggle-{key}-2"), press(at, f"enter-{key}")
    at = app("ann")
    at.switch_page(f"{PAGES}/history.py").run()
    assert any("not judged anything" in i.value for i in at.info)  # bob's judgment is not ann's
    at = app("bob")
    at.switch_page(f"{PAGES}/history.py").run()
    assert len(at.dataframe[0].value) == 1
    press(at, "edit-judgment")
    assert any("Editing your judgment" in i.value for i in at.info)


def test_app_refuses_to_start_on_a_schema_that_is_behind(app, small_round):
    from alembic import command
    command.downgrade(alembic_config(small_round.settings.db_url), "0001")
    at = app()
    assert any("storyloop db upgrade" in e.value for e in at.error)


def test_rounds_page_changes_k_gold_rate_and_skip_policy(app, small_round):
    from storyloop.db.models import Round, SkipPolicy

    at = app("rita")
    at.switch_page(f"{PAGES}/rounds.py").run()
    at.number_input[0].set_value(3)
    at.slider[0].set_value(0.2)
    at.radio[0].set_value(SkipPolicy.counts)
    next(b for b in at.button if b.label == "Save").click().run()
    assert any("Saved: k = 3" in s.value for s in at.success)
    assert at.dataframe[0].value.k.tolist() == [3]  # the table shows what was saved, not what was there
    with session_scope(small_round.settings.db_url) as s:
        rnd = s.get(Round, small_round.round_id)
        assert (rnd.judgments_per_scenario, rnd.gold_rate, rnd.skip_policy) == (3, 0.2, SkipPolicy.counts)


def test_rounds_page_puts_vistorybench_results_side_by_side(app, small_round, tmp_path):
    from storyloop.db.models import Round
    from storyloop.vistory.results import store_results
    from tests.vistory.helpers import LEADERBOARD, summary_json, write_summary

    with session_scope(small_round.settings.db_url) as s:  # as `vistory import` would have recorded it
        s.get(Round, small_round.round_id).source = {"benchmark": "vistorybench", "split": "lite", "language": "en"}
    for method, stamp in (("UNO", "20260105_100000"), ("StoryGen", "20260105_110000")):
        path = write_summary(tmp_path / method / "summary.json",
                             summary_json(method, timestamp=stamp, figures=LEADERBOARD[method]))
        with session_scope(small_round.settings.db_url) as s:
            store_results(s, "r1", path)
    at = app("rita")
    at.switch_page(f"{PAGES}/rounds.py").run()
    table = at.dataframe[1].value
    assert table.method.tolist() == ["UNO", "StoryGen"] and set(table["round"]) == {"r1"}
    assert [round(v, 1) for v in table["CIDS cross"]] == [45.7, 37.1]
    assert [round(v, 1) for v in table["alignment"]] == [79.6, 41.4]


def test_gallery_sets_a_gold_answer_and_refuses_a_bad_one(app, small_round):
    from storyloop.db.models import GoldAnswer

    at = app("rita")
    at.switch_page(f"{PAGES}/gallery.py").run()
    save = next(b for b in at.button if b.label == "Save gold")
    save.click().run()  # nobody judged yet: no winner picked
    assert any("exactly one winner" in e.value for e in at.error)
    sid = small_round.scenarios[0]
    first, _, last = small_round.candidates[sid]
    at.multiselect[0].set_value([first])
    at.multiselect[1].set_value([last])
    next(b for b in at.button if b.label == "Save gold").click().run()
    assert any("Gold answer saved" in s.value for s in at.success)
    assert any("gold" in m.value and "Aggregated outcome" in m.value for m in at.markdown)  # the badge, now
    remove = next(b for b in at.button if b.label == "Remove gold")
    assert not remove.disabled
    with session_scope(small_round.settings.db_url) as s:
        gold = s.scalar(select(GoldAnswer))
        assert (gold.scenario_id, gold.winner_candidate_ids, gold.loser_candidate_ids) == (sid, [first], [last])


# A page script with the app's __main__ guard: AppTest leaves it as the process's __main__, and a process
# spawned later in this worker (the concurrency tests) re-runs __main__ under another name.
FAILING_PAGE = """
from storyloop.annotator import ui

if __name__ == "__main__":
    with ui.errors_by_id():
        raise ValueError("cannot open /srv/storyloop/secret/path.db")
"""


def test_an_unexpected_error_shows_an_id_not_a_traceback(caplog, tmp_path):
    page = tmp_path / "failing_page.py"
    page.write_text(FAILING_PAGE)
    with caplog.at_level("ERROR", logger="storyloop.annotator"):
        at = AppTest.from_file(str(page), default_timeout=30).run()
    assert not at.exception
    [shown] = at.error
    assert "/srv/storyloop" not in shown.value and "ValueError" not in shown.value
    error_id = shown.value.split("(error ")[1].split(")")[0]
    [record] = [r for r in caplog.records if error_id in r.getMessage()]
    assert "/srv/storyloop/secret/path.db" in caplog.text and record.exc_info is not None


def test_references_are_grouped_under_their_characters_on_the_judging_and_gallery_pages(settings, tmp_path,
                                                                                        monkeypatch):
    from tests.annotator.conftest import build_round

    build_round(settings, tmp_path / "src", two_characters=True)
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("STORYLOOP_DB_URL", settings.db_url)

    def headers(at):
        return [m.value.split(">")[1].split("<")[0] for m in at.markdown if 'class="sl-character"' in m.value]

    at = login(AppTest.from_file(APP, default_timeout=30).run(), "ann")
    assert headers(at) == ["Mia", "Tom"]
    captions = [c for img in at.image for c in img.captions]
    assert captions[:3] == ["", "Tom 1", "Tom 2"]  # one image of Mia needs no number; three candidates follow
    assert any("every character of the references (Mia, Tom)" in c.value for c in at.caption)
    research = login(AppTest.from_file(APP, default_timeout=30).run(), "rita")
    research.switch_page(f"{PAGES}/gallery.py").run()
    assert headers(research) == ["Mia", "Tom"] and len(research.image) == 6  # three references, three candidates


def test_a_flat_reference_list_shows_no_character_names(app):
    at = app("ann")
    assert not [m for m in at.markdown if 'class="sl-character"' in m.value]
    assert any("keep the character of the references" in c.value for c in at.caption)
