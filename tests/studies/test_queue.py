"""The study queue: k answers per item, leases, one answer per shown task, undo as a revision, skips, gold."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from storyloop.db import session_scope
from storyloop.db.models import StudyAnswer, StudyArm, StudyItem, utcnow
from storyloop.studies.errors import StudyError
from storyloop.studies.gold import set_study_gold, study_gold_scores
from storyloop.studies.queue import (LikertScores, edit_study_task, next_study_task, sides, study_progress,
                                     submit_study_task, task_view, undo_task)
from tests.studies.conftest import SCENARIOS, add_annotators, folder_study

TWO = SCENARIOS[:2]


def nxt(url, user, study, now=None):
    with session_scope(url) as s:
        return next_study_task(s, user, study, now=now)


def submit(url, task, **answer):
    with session_scope(url) as s:
        return submit_study_task(s, task, **answer)


def answers(url):
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(StudyAnswer))


def test_each_item_gets_k_answers_and_leases_share_the_work(settings, tmp_path):
    study = folder_study(settings, tmp_path, scenarios=TWO, k=2)
    users = add_annotators(settings)
    url = settings.db_url
    ann, bob, cat = (nxt(url, users[u], study) for u in ("ann", "bob", "cat"))
    assert ann.item_id == bob.item_id != cat.item_id  # two leases fill the first item's k
    assert nxt(url, users["ann"], study).item_id == ann.item_id  # a reload resumes the lease
    for t in (ann, bob, cat):
        submit(url, t, choice="left")
    assert nxt(url, users["cat"], study) is None  # cat answered the other item; the first is full
    rest = nxt(url, users["ann"], study)
    assert rest.item_id == cat.item_id
    submit(url, rest, choice="tie")
    assert nxt(url, users["bob"], study) is None and nxt(url, users["ann"], study) is None
    with session_scope(url) as s:
        per_item = dict(s.execute(select(StudyAnswer.item_id, func.count()).group_by(StudyAnswer.item_id)).all())
        assert per_item == {ann.item_id: 2, cat.item_id: 2}
        progress = study_progress(s, users["ann"], study)
        assert (progress.answered_by_me, progress.left_for_me, progress.done, progress.needed) == (2, 0, 4, 4)


def test_an_expired_lease_goes_back_to_the_queue(settings, tmp_path):
    study = folder_study(settings, tmp_path, scenarios=TWO[:1], k=1)
    users = add_annotators(settings)
    first = nxt(settings.db_url, users["ann"], study)
    assert nxt(settings.db_url, users["bob"], study) is None
    later = utcnow() + timedelta(hours=1)
    assert nxt(settings.db_url, users["bob"], study, now=later).item_id == first.item_id


def test_double_submit_stores_one_answer_with_the_sides_shown(settings, tmp_path):
    study = folder_study(settings, tmp_path, k=1)
    users = add_annotators(settings, ("ann",))
    url, seen = settings.db_url, []
    while (task := nxt(url, users["ann"], study)) is not None:
        first = submit(url, task, choice="right")
        again = submit(url, task, choice="left")  # a double click, a rerun, a second tab
        assert first.created and not again.created and again.answer_id == first.answer_id
        seen.append(task)
    assert answers(url) == len(seen) == 4
    with session_scope(url) as s:
        for task in seen:
            a = s.scalar(select(StudyAnswer).where(StudyAnswer.item_id == task.item_id))
            item = s.get(StudyItem, task.item_id)
            assert (a.left_arm_id, a.right_arm_id) == sides(users["ann"], item, 1) == (task.left_arm_id,
                                                                                       task.right_arm_id)
            assert {a.left_arm_id, a.right_arm_id} == {item.arm_a_id, item.arm_b_id} and a.choice.value == "right"


def test_sides_are_random_across_items():
    lefts = {sides(7, StudyItem(id=i, arm_a_id=1, arm_b_id=2), 1)[0] for i in range(40)}
    assert lefts == {1, 2}


def test_undo_is_a_new_revision_and_the_old_one_stays(settings, tmp_path):
    study = folder_study(settings, tmp_path, scenarios=TWO, k=1)
    users = add_annotators(settings, ("ann",))
    url = settings.db_url
    task = nxt(url, users["ann"], study)
    submit(url, task, choice="left")
    with session_scope(url) as s:
        edit = undo_task(s, users["ann"], study)
    assert (edit.item_id, edit.base_revision, edit.previous.choice.value) == (task.item_id, 1, "left")
    assert (edit.left_arm_id, edit.right_arm_id) == (task.left_arm_id, task.right_arm_id)  # as they saw it
    assert edit.idempotency_key != task.idempotency_key
    done = submit(url, edit, choice="both_bad")
    assert (done.revision, done.created) == (2, True) and not submit(url, edit, choice="tie").created
    with session_scope(url) as s:
        rows = s.scalars(select(StudyAnswer).order_by(StudyAnswer.revision)).all()
        assert [(r.revision, r.choice.value) for r in rows] == [(1, "left"), (2, "both_bad")]
        with pytest.raises(LookupError):
            edit_study_task(s, users["ann"], task.item_id + 1000)
    nxt_task = nxt(url, users["ann"], study)
    assert nxt_task.item_id != task.item_id  # the edited item still counts once


def test_a_skip_does_not_count_and_the_skipper_does_not_get_it_again(settings, tmp_path):
    study = folder_study(settings, tmp_path, scenarios=TWO[:1], k=1)
    users = add_annotators(settings, ("ann", "bob"))
    url = settings.db_url
    task = nxt(url, users["ann"], study)
    with pytest.raises(StudyError, match="a skip needs a reason"):
        submit(url, task, skip_reason="  ")
    submit(url, task, skip_reason="cannot decide")
    assert nxt(url, users["ann"], study) is None
    other = nxt(url, users["bob"], study)
    assert other.item_id == task.item_id
    submit(url, other, choice="tie")
    assert nxt(url, users["bob"], study) is None and answers(url) == 2


def test_likert_items_show_one_arms_story_and_take_three_scores(settings, tmp_path):
    study = folder_study(settings, tmp_path, kind="likert", k=1)
    users = add_annotators(settings, ("ann",))
    url = settings.db_url
    task = nxt(url, users["ann"], study)
    assert task.left_arm_id is None
    with session_scope(url) as s:
        view = task_view(s, settings.store_dir, task)
        item = s.get(StudyItem, task.item_id)
        arm = s.get(StudyArm, item.arm_a_id).name
    assert [f.prompt for f in view.frames] == [p for k, st, f, p in SCENARIOS if st == item.story_id]
    assert all(f.image.exists() and len(f.references) == 1 for f in view.frames)
    assert not any(arm in str(f.image) for f in view.frames)  # store names are sha256, never the arm's
    for bad, message in [(dict(scores=LikertScores(3, 6, 2)), "Style consistency must be a whole number from 1 to 5"),
                         (dict(choice="left"), "three scores"), (dict(), "three scores")]:
        with pytest.raises(StudyError, match=message):
            submit(url, task, **bad)
    assert answers(url) == 0
    submit(url, task, scores=LikertScores(4, 5, 2))
    with session_scope(url) as s:
        a = s.scalar(select(StudyAnswer))
        assert (a.cc, a.sc, a.sa, a.choice, a.left_arm_id) == (4, 5, 2, None, None)


def test_the_schema_refuses_an_answer_of_two_kinds(settings, tmp_path):
    study = folder_study(settings, tmp_path, scenarios=TWO[:1], k=1)
    with pytest.raises(IntegrityError):
        with session_scope(settings.db_url) as s:
            item = s.scalar(select(StudyItem).where(StudyItem.study_id == study))
            s.add(StudyAnswer(item_id=item.id, user_id=add_annotators_in(s), revision=1, idempotency_key="k",
                              choice="left", cc=3, sc=3, sa=3, shown_at=utcnow()))
            s.flush()


def add_annotators_in(s) -> int:
    from storyloop.db.models import Role
    from storyloop.db.users import add_user

    return add_user(s, "zed", "password123", Role.annotator).id


def test_pairwise_view_shows_both_images_and_no_arm(settings, tmp_path):
    study = folder_study(settings, tmp_path, scenarios=TWO[:1], k=1, arm_names=("uno-v2", "storyloop-dpo"))
    users = add_annotators(settings, ("ann",))
    task = nxt(settings.db_url, users["ann"], study)
    with session_scope(settings.db_url) as s:
        view = task_view(s, settings.store_dir, task)
    assert view.left != view.right and view.left.exists() and view.right.exists()
    for path in (view.left, view.right):
        assert "uno" not in path.name and "dpo" not in path.name and b"uno" not in path.read_bytes()
    assert "left_arm_id" not in repr(task)  # sides stay out of the task's repr (and so of logs)


def test_items_wait_for_every_image(settings, tmp_path, models):
    model_arm = f"m=base={models / 'flux'}"  # no images until `study generate`
    study = folder_study(settings, tmp_path, scenarios=TWO[:1], k=1, extra_arms=(model_arm,))
    users = add_annotators(settings, ("ann",))
    task = nxt(settings.db_url, users["ann"], study)
    with session_scope(settings.db_url) as s:
        item = s.get(StudyItem, task.item_id)
        assert {item.arm_a.name, item.arm_b.name} == {"x", "y"}
    submit(settings.db_url, task, choice="left")
    assert nxt(settings.db_url, users["ann"], study) is None  # x-m and y-m wait for m's images


def test_gold_first_and_scored_by_arm_not_side(settings, tmp_path):
    study = folder_study(settings, tmp_path, k=1, gold_rate=0.5)
    users = add_annotators(settings, ("ann",))
    url = settings.db_url
    with session_scope(url) as s:
        items = s.scalars(select(StudyItem).where(StudyItem.study_id == study).order_by(StudyItem.position)).all()
        gold_item = items[-1]
        set_study_gold(s, gold_item.id, preferred_arm_id=gold_item.arm_b_id)
    with pytest.raises(StudyError, match="one of the item's two arms"), session_scope(url) as s:
        set_study_gold(s, gold_item.id, preferred_arm_id=12345)
    first = nxt(url, users["ann"], study)
    assert first.item_id == gold_item.id and first.is_gold
    submit(url, first, choice="left" if first.left_arm_id == gold_item.arm_b_id else "right")
    with session_scope(url) as s:
        [score] = study_gold_scores(s, study)
    assert (score.username, score.answered, score.matched) == ("ann", 1, 1)
