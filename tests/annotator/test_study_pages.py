"""The study pages through Streamlit's AppTest: answering by key and by button, undo, blindness, results, roles.

Key presses reach the page as the key listener sends them in a browser: a log of presses set as the
component's state (`keys_down`), so the page's own wiring (keys.pressed -> study_keys.apply_presses -> submit)
is what runs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import UnknownElement

import storyloop.annotator
from storyloop.annotator import ui
from storyloop.annotator.study_view import PAIR_PX, shown_item
from storyloop.db import session_scope
from storyloop.db.models import Role, StudyAnswer, StudyArm, StudyChoice, StudyItem
from storyloop.db.users import add_user
from storyloop.studies.protocol import LIKERT_INCOMPLETE
from storyloop.studies.queue import LikertScores, next_study_task, sides, submit_study_task
from tests.annotator.conftest import PASSWORD, log_in
from tests.studies.conftest import SCENARIOS, folder_study

APP = str(Path(storyloop.annotator.__file__).parent / "app.py")
PAGES = ui.PAGES_DIR.relative_to(Path(APP).parent)
ARMS = ("stage1lora", "dpolora")  # names that must never reach an annotator's page


@pytest.fixture
def users(settings):
    with session_scope(settings.db_url) as s:
        return {name: add_user(s, name, PASSWORD, role).id
                for name, role in (("ann", Role.annotator), ("bob", Role.annotator), ("rita", Role.researcher))}


@pytest.fixture
def app(settings, users, monkeypatch):
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("STORYLOOP_DB_URL", settings.db_url)

    def start(username: str, page: str = "study") -> AppTest:
        at = log_in(AppTest.from_file(APP, default_timeout=30).run(), username)
        at.switch_page(f"{PAGES}/{page}.py").run()
        assert not at.exception, at.exception
        return at
    return start


def study(settings, tmp_path, kind="pairwise", name="blind-one", arms=ARMS, k=2) -> int:
    return folder_study(settings, tmp_path, name=name, kind=kind, k=k, arm_names=arms)


def screen(at: AppTest):
    return at.session_state[ui.STUDY_SCREEN]


def keys_down(at: AppTest, *keys: str, token: str | None = None) -> AppTest:
    """Send key presses as the browser's listener does: its log of presses, as the component's state.
    "+Tab" is Shift+Tab. The log holds every press this test sent before, as the real one does."""
    [listener] = [e for e in at._tree if isinstance(e, UnknownElement) and e.proto.id.endswith("-study-keys")]
    log = at.session_state["_test_key_log"] if "_test_key_log" in at.session_state else []
    seq = max([ev["seq"] for ev in log], default=100)
    for key in keys:
        seq += 1
        log.append({"seq": seq, "key": key.lstrip("+"), "shift": key.startswith("+"),
                    "task": token or screen(at).key, "session": at.session_state[ui.KEYS_SESSION], "text": None})
    at.session_state["_test_key_log"] = log
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id, state.json_value = listener.proto.id, json.dumps({"events": log[-50:]})
    at._run(states)
    assert not at.exception, at.exception
    return at


def answers(settings) -> list[StudyAnswer]:
    with session_scope(settings.db_url) as s:
        rows = list(s.scalars(select(StudyAnswer).order_by(StudyAnswer.id)))
        s.expunge_all()
        return rows


def arm_ids(settings, study_id: int) -> dict[str, int]:
    with session_scope(settings.db_url) as s:
        return dict(s.execute(select(StudyArm.name, StudyArm.id).where(StudyArm.study_id == study_id)).all())


def test_pairwise_answered_by_a_key_is_stored_once_with_the_side_shown(app, settings, tmp_path, users):
    study(settings, tmp_path)
    at = app("ann")
    first = screen(at).task
    assert any(f["prompt"] in m.value for m in at.markdown for f in [{"prompt": p} for *_, p in SCENARIOS])
    assert len(at.image) == 3  # one reference, two frames
    keys_down(at, "ArrowLeft")
    [a] = answers(settings)
    with session_scope(settings.db_url) as s:
        shown_left, shown_right = sides(users["ann"], s.get(StudyItem, first.item_id), 1)
    assert (a.item_id, a.user_id, a.revision, a.choice) == (first.item_id, users["ann"], 1, StudyChoice.left)
    assert (a.left_arm_id, a.right_arm_id) == (shown_left, shown_right) == (first.left_arm_id, first.right_arm_id)
    nxt = screen(at)
    assert nxt.task.item_id != first.item_id
    assert [t.value for t in at.toast] == ["Saved: left is better. Press U to change it."]
    keys_down(at, "2", token="a-screen-that-is-gone")  # a press made on the page before: dropped
    assert len(answers(settings)) == 1 and screen(at) is nxt
    keys_down(at, "t", "b")  # the b was meant for the page after the tie: not applied to it
    assert [(a.choice, a.item_id) for a in answers(settings)[1:]] == [(StudyChoice.tie, nxt.task.item_id)]


def test_likert_rated_by_keys_tab_and_enter(app, settings, tmp_path, users):
    study(settings, tmp_path, kind="likert")
    at = app("ann")
    shown = screen(at).task
    assert any("Rate this story (2 frames)" in m.value for m in at.markdown)
    assert len(at.image) == 3  # the story's reference (shared by its frames), its two frames
    keys_down(at, "5", "3", "Enter")  # CC 5, SC 3, and Enter before aesthetics is rated
    assert [w.value for w in at.warning] == [LIKERT_INCOMPLETE] and not answers(settings)
    assert screen(at).likert.scores == {"cc": 5, "sc": 3, "sa": None}
    keys_down(at, "Tab", "4", "+Tab", "+Tab", "2", "Enter")  # Tab wraps to CC (4), back twice to SA (2)
    [a] = answers(settings)
    assert (a.item_id, a.cc, a.sc, a.sa, a.choice, a.left_arm_id) == (shown.item_id, 4, 3, 2, None, None)


def test_buttons_answer_and_undo_stores_a_revision(app, settings, tmp_path):
    study(settings, tmp_path)
    at = app("ann")
    key = screen(at).key
    at.button(key=f"choice-{key}-2").click().run()
    first = answers(settings)[0]
    at.button(key="undo").click().run()
    edit = screen(at)
    assert edit.task.is_edit and edit.task.item_id == first.item_id
    assert any("Editing your answer (right is better, revision 1)" in i.value for i in at.info)
    at.button(key=f"choice-{edit.key}-t").click().run()
    a1, a2 = answers(settings)
    assert (a1.revision, a1.choice, a2.revision, a2.choice) == (1, StudyChoice.right, 2, StudyChoice.tie)
    assert (a2.item_id, a2.left_arm_id, a2.right_arm_id) == (a1.item_id, a1.left_arm_id, a1.right_arm_id)
    assert screen(at).key != edit.key and not screen(at).task.is_edit  # back to new work


def test_skip_with_a_reason_and_a_second_annotator_gets_the_item_closest_to_done(app, settings, tmp_path, users):
    study(settings, tmp_path)
    at = app("ann")
    done_by_ann = screen(at).task.item_id
    keys_down(at, "1")
    skipped = screen(at).task.item_id
    keys_down(at, "s", "3")  # skip: the prompt is unclear
    assert answers(settings)[-1].skip_reason == "prompt is unclear"
    bob = app("bob")
    assert screen(bob).task.item_id == done_by_ann  # one of its k = 2 answers is in: closest to done
    assert screen(bob).task.item_id != skipped


def test_the_page_names_no_arm(app, settings, tmp_path):
    sid = study(settings, tmp_path)
    at = app("ann")
    shown = "\n".join(str(node.proto) for node in at._tree if hasattr(node, "proto"))
    with session_scope(settings.db_url) as s:
        folders = [a.folder for a in s.scalars(select(StudyArm).where(StudyArm.study_id == sid))]
        item = s.get(StudyItem, screen(at).task.item_id)
        secret = [*ARMS, *folders, item.key, f"-{item.id}-"]
    assert not [word for word in secret if word in shown]
    assert screen(at).key not in screen(at).task.idempotency_key


def test_pairwise_frames_come_at_one_size_whatever_their_native_size(settings, tmp_path, users):
    sid = study(settings, tmp_path)
    with session_scope(settings.db_url) as s:  # arm dpolora's images at 64 px, stage1lora's at 32 px
        from storyloop.db.assets import asset_path
        from storyloop.db.models import StudyImage
        for im in s.scalars(select(StudyImage).join(StudyArm).where(StudyArm.name == "dpolora")):
            path = asset_path(settings.store_dir, im.asset)
            path.chmod(0o644)
            Image.open(path).resize((64, 64)).save(path, format="PNG")
        task = next_study_task(s, users["ann"], sid)
        item = shown_item(s, settings, task)
    sizes = {Image.open(io.BytesIO(b)).size for b in (item.left, item.right)}
    assert sizes == {(PAIR_PX, PAIR_PX)}


def table(at: AppTest, column: str):
    """The page's table that has this column (AppTest does not expose a dataframe's key)."""
    [found] = [d.value for d in at.dataframe if column in d.value.columns]
    return found


def _answered_studies(settings, tmp_path, users) -> None:
    """A three-arm pairwise study and a Likert study, each answered by ann and bob."""
    pw = study(settings, tmp_path, name="three-way", arms=("aa", "bb", "cc"))
    lk = study(settings, tmp_path, kind="likert", name="rated")
    with session_scope(settings.db_url) as s:
        for who in ("ann", "bob"):
            n = 0
            while (task := next_study_task(s, users[who], pw)) is not None:
                submit_study_task(s, task, choice=("left", "right", "tie")[n % 3])
                n += 1
            while (task := next_study_task(s, users[who], lk)) is not None:
                submit_study_task(s, task, scores=LikertScores(4, 3 + n % 2, 5))
                n += 1


def test_results_page_shows_win_rates_bradley_terry_position_bias_and_likert(app, settings, tmp_path, users):
    _answered_studies(settings, tmp_path, users)
    at = app("rita", "study_results")
    assert at.selectbox(key="results-picker").value == "rated"  # the newest study first
    likert = table(at, "ratings")
    assert sorted(set(likert.arm)) == sorted(ARMS) and list(likert.criterion[:3]) == ["CC", "SC", "SA"]
    assert (likert.ratings == 4).all() and (likert["4"][likert.criterion == "CC"] == 4).all()  # 2 stories x 2
    [chart] = at.get("vega_lite_chart")  # Figure 5: criteria on x, a bar per arm, error bars
    spec = json.loads(chart.proto.spec)
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "errorbar"]
    assert spec["layer"][0]["encoding"]["x"]["field"] == "criterion"
    at.selectbox(key="results-picker").set_value("three-way").run()
    assert not at.exception
    wins = table(at, "win rate")
    assert wins.pair.tolist() == ["aa vs bb", "aa vs cc", "bb vs cc"] and (wins.answers == 8).all()
    bt = table(at, "score")
    assert sorted(bt.arm) == ["aa", "bb", "cc"] and (bt["ci low"] <= bt.score).all()
    assert any("decisive answers" in m.value for m in [*at.success, *at.warning])
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download answers (CSV)", "Download answers (parquet)"]


def test_an_annotator_cannot_open_the_results_page(app, settings, tmp_path):
    study(settings, tmp_path)
    at = app("ann")
    with pytest.raises(Exception):
        at.switch_page(f"{PAGES}/study_results.py").run()
