"""What an annotator sees while judging, in a real Chromium at a laptop's 1280x800: small candidates drawn as
large as the window allows and never smaller than the references, a zoom that fills the window, references
grouped by character, and a warning that goes away with the press that answers it."""

from __future__ import annotations

import pytest

from storyloop.db import upgrade
from storyloop.settings import Settings
from tests.annotator.conftest import build_round
from tests.annotator.test_browser import (ARTIFACTS, _free_port, _login, _prompt, _require_chromium, _serve, _step,
                                          _stop, browser)  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.slow
NATIVE = 64  # every image of this round is 64 x 64


@pytest.fixture
def small_images(tmp_path):
    """Two scenarios of four 64² candidates (k = 2), each with Mia's one reference and Tom's two."""
    _require_chromium()
    settings = Settings.resolve(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'storyloop.db'}")
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.db_url)
    build_round(settings, tmp_path / "src", scenarios=2, candidates=4, k=2, size=(NATIVE, NATIVE),
                two_characters=True)
    port = _free_port()
    proc = _serve(settings, port, tmp_path / "server.log")
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


def _boxes(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(selector, "els => els.map(e => { const r = e.getBoundingClientRect(); "
                                               "return {w: r.width, h: r.height, bottom: r.bottom}; })")


def test_small_candidates_are_judged_large_with_references_by_character(small_images, browser):
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    _login(page, small_images, "ann")
    _prompt(page, "frame 0: Mia waves")
    _step(page, "Character consistency")
    page.wait_for_function("Array.from(document.images).length >= 7 && "
                           "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    expect(page.locator(".sl-character")).to_have_text(["Mia", "Tom"])
    cards = _boxes(page, 'div[class*="st-key-card-"] [data-testid="stImage"] img')
    refs = _boxes(page, 'div[class*="st-key-refs-"] [data-testid="stImage"] img')
    assert len(cards) == 4 and len(refs) == 3
    assert min(c["w"] for c in cards) >= 2.5 * NATIVE  # upscaled, not shown at their native 64 px
    assert min(c["w"] for c in cards) >= max(r["w"] for r in refs) - 1  # never smaller than a reference
    assert max(c["bottom"] for c in cards) <= 800  # every candidate above the fold
    page.screenshot(path=str(ARTIFACTS / "annotator-small-images.png"))

    page.keyboard.press("Shift+2")  # the zoom fills the window, pixel-art sharp
    expect(page.get_by_text(f"Candidate 2 · {NATIVE}×{NATIVE}")).to_be_visible()
    page.wait_for_function("document.querySelector('[role=dialog] img') && "
                           "document.querySelector('[role=dialog] img').complete")
    [zoom] = _boxes(page, '[role="dialog"] [data-testid="stImage"] img')
    assert zoom["h"] >= 0.6 * 800 or zoom["w"] >= 0.6 * 1280, zoom
    page.screenshot(path=str(ARTIFACTS / "annotator-zoom.png"))
    page.keyboard.press("Escape")
    expect(page.get_by_text(f"Candidate 2 · {NATIVE}×{NATIVE}")).to_be_hidden()

    # Enter with nothing ranked warns; the press that ranks takes the warning away (it used to stay)
    page.keyboard.press("Enter")
    _step(page, "Anatomical integrity")
    page.keyboard.press("Enter")
    _step(page, "Aesthetics")
    page.keyboard.press("Enter")
    warning = page.get_by_text("Nothing to submit yet")
    expect(warning).to_be_visible()
    page.keyboard.press("1")
    expect(page.locator('[class*="st-key-card-1-best"]')).to_be_visible()
    expect(warning).to_be_hidden()
    page.keyboard.press("Enter")
    _prompt(page, "frame 1: Mia waves")
    expect(page.get_by_text("Nothing to submit yet")).to_be_hidden()
