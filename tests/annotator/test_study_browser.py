"""The study pages in a real Chromium: `storyloop annotate` in a subprocess, driven by Playwright (as
test_browser.py does, with its helpers).

An annotator answers a pairwise study and a Likert study by keyboard; the database holds each answer once,
with the side shown; a second annotator gets the right next item; and neither the page, the URL nor the
served images name an arm (the arms' images differ in native size, and still come at one size).
"""

from __future__ import annotations

import urllib.request

import pytest
from PIL import Image
from sqlalchemy import select

from storyloop.db import session_scope, upgrade
from storyloop.db.assets import asset_path
from storyloop.db.models import Role, StudyAnswer, StudyArm, StudyChoice, StudyImage, StudyItem
from storyloop.db.users import add_user
from storyloop.settings import Settings
from storyloop.studies.queue import sides
from tests.annotator.conftest import PASSWORD
from tests.annotator.test_browser import _free_port, _login, _require_chromium, _serve, _stop, browser  # noqa: F401
from tests.studies.conftest import folder_study

pytestmark = pytest.mark.slow
ARMS = ("stage1lora", "dpolora")


@pytest.fixture
def studies(tmp_path):
    """A pairwise study (k = 2; dpolora's images twice the size of stage1lora's) and a Likert study, served."""
    _require_chromium()
    settings = Settings.resolve(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'storyloop.db'}")
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as s:
        users = {n: add_user(s, n, PASSWORD, Role.annotator).id for n in ("ann", "bob")}
    likert = folder_study(settings, tmp_path, name="blind-stories", kind="likert", k=1, arm_names=ARMS)
    pairwise = folder_study(settings, tmp_path, name="blind-pairs", k=2, arm_names=ARMS)  # newest: shown first
    with session_scope(settings.db_url) as s:  # a native-size difference that the page must not show
        for im in s.scalars(select(StudyImage).join(StudyArm).where(StudyArm.study_id == pairwise,
                                                                     StudyArm.name == "dpolora")):
            path = asset_path(settings.store_dir, im.asset)
            path.chmod(0o644)
            Image.open(path).resize((64, 64)).save(path, format="PNG")
    with session_scope(settings.db_url) as s:
        folders = [a.folder for a in s.scalars(select(StudyArm))]
    port = _free_port()
    proc = _serve(settings, port, tmp_path / "server.log")
    yield settings, f"http://127.0.0.1:{port}", users, pairwise, likert, folders
    _stop(proc)


def _ready(page) -> None:
    page.wait_for_function("(d => d.testConnectionState === 'CONNECTED' && d.testScriptState === 'notRunning')"
                           "(document.querySelector('[data-testid=\"stApp\"]').dataset)")
    page.wait_for_load_state("networkidle")


def _blind(page, url: str, secrets: list[str]) -> None:
    """Nothing on the page, in its URL or in its images' addresses or bytes names an arm."""
    html = page.content()
    srcs = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.src)")
    images = b"".join(urllib.request.urlopen(src).read() for src in srcs if src.startswith(url))
    for word in secrets:
        assert word not in html and word not in page.url and not any(word in s for s in srcs), word
        assert word.encode() not in images, word


def _open_study(page, url: str, username: str) -> None:
    _login(page, url, username)
    page.get_by_test_id("stTopNavSection").filter(has_text="Studies").click()
    page.get_by_text("Answer a study").click()


def test_pairwise_and_likert_answered_by_keyboard_blind_and_once(studies, browser):
    from playwright.sync_api import expect

    settings, url, users, pairwise, likert, folders = studies
    secrets = [*ARMS, *folders]
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    _open_study(page, url, "ann")
    expect(page.get_by_role("button", name="Left is better")).to_be_enabled()
    _ready(page)
    page.wait_for_function("[...document.querySelectorAll('.st-key-study-pair img')].length === 2 && "
                           "[...document.querySelectorAll('.st-key-study-pair img')].every(i => i.complete)")
    left, right = (page.locator(".st-key-study-pair img").nth(i).bounding_box() for i in (0, 1))
    ref = page.locator(".st-key-study-refs img").first.bounding_box()
    assert (left["width"], left["height"]) == (right["width"], right["height"])  # 32 px and 64 px natives
    assert left["width"] >= ref["width"] and left["height"] >= ref["height"]
    _blind(page, url, secrets)
    page.screenshot(path=str(__import__("tests.annotator.test_browser", fromlist=["ARTIFACTS"]).ARTIFACTS
                             / "study-pairwise.png"))

    page.keyboard.press("ArrowRight")  # the right frame is better
    expect(page.get_by_text("answered by you 1", exact=False)).to_be_visible()
    _ready(page)
    page.keyboard.press("t")  # a tie on the second item
    expect(page.get_by_text("answered by you 2", exact=False)).to_be_visible()
    with session_scope(settings.db_url) as s:
        rows = list(s.scalars(select(StudyAnswer).order_by(StudyAnswer.id)))
        assert [(a.user_id, a.revision, a.choice) for a in rows] == [(users["ann"], 1, StudyChoice.right),
                                                                     (users["ann"], 1, StudyChoice.tie)]
        for a in rows:
            assert (a.left_arm_id, a.right_arm_id) == sides(users["ann"], s.get(StudyItem, a.item_id), 1)
        first_item = rows[0].item_id

    # bob: the first of ann's items has one of its k = 2 answers, so it is closest to done
    page2 = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    _open_study(page2, url, "bob")
    expect(page2.get_by_role("button", name="Left is better")).to_be_enabled()
    _ready(page2)
    with session_scope(settings.db_url) as s:
        from storyloop.db.models import StudyLease
        [lease] = s.scalars(select(StudyLease).where(StudyLease.user_id == users["bob"]))
        assert lease.item_id == first_item
    expect(page2.get_by_text("answered by you 0", exact=False)).to_be_visible()

    # ann moves to the Likert study: 1-5 per criterion, Tab between them, Enter submits
    page.get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name="blind-stories", exact=False).click()
    expect(page.get_by_text("Rate this story (2 frames)")).to_be_visible()
    _ready(page)
    page.locator(".sl-prompt").click()  # out of the picker's search box: keys typed there are text
    _blind(page, url, secrets)
    page.keyboard.press("4")  # CC 4, on to SC
    page.keyboard.press("Tab")  # skip SC for now: on to SA
    page.keyboard.press("5")  # SA 5
    page.keyboard.press("Shift+Tab")  # back to SC
    page.keyboard.press("2")
    expect(page.locator(".st-key-crit-sa-on")).to_be_visible()
    page.screenshot(path=str(__import__("tests.annotator.test_browser", fromlist=["ARTIFACTS"]).ARTIFACTS
                             / "study-likert.png"))
    page.keyboard.press("Enter")
    expect(page.get_by_text("answered by you 1", exact=False)).to_be_visible()
    with session_scope(settings.db_url) as s:
        rated = list(s.scalars(select(StudyAnswer).join(StudyItem).where(StudyItem.study_id == likert)))
        assert [(a.cc, a.sc, a.sa, a.revision, a.user_id) for a in rated] == [(4, 2, 5, 1, users["ann"])]
