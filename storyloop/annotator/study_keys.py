"""The study pages' keys: what a press does to the item on screen.

The key rules are storyloop/studies/protocol.py's (one key answers a pairwise item; Likert rates 1-5 in turn,
Tab between criteria, Enter submits); this module adds the page's own keys around them (S and a reason to
skip, U to reopen the last answer, Esc to cancel) and the bookkeeping of judging's keys (keys.unapplied):
each press applied once, only to the item that was on screen when it was pressed. The page's buttons go
through `press` too, so a click and a key do the same thing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from storyloop.annotator.keys import unapplied
from storyloop.annotator.submit import SKIP_REASONS
from storyloop.db.models import StudyChoice, StudyKind
from storyloop.studies.protocol import (LIKERT_INCOMPLETE, SCORE_KEYS, SKIP_KEY, UNDO_KEY, LikertDraft,
                                        pairwise_choice)
from storyloop.studies.queue import CRITERIA, LikertScores, StudyTask

ESCAPE = "Escape"
# What the listener takes on each page: Tab is captured (its focus move stopped) on the Likert page only.
PAIRWISE_PAGE_KEYS = ("1", "2", "t", "b", SKIP_KEY, UNDO_KEY, "ArrowLeft", "ArrowRight", "Enter", ESCAPE)
LIKERT_PAGE_KEYS = (*SCORE_KEYS, "Tab", "Enter", "Backspace", SKIP_KEY, UNDO_KEY, ESCAPE)


@dataclass
class StudyScreen:
    """The item on an annotator's screen: the task, the Likert ratings given so far, the skip panel."""

    task: StudyTask
    likert: LikertDraft | None = None
    skipping: bool = False
    # Names the screen in element keys and key presses. Not the task's idempotency key: that holds the item
    # id, and item ids follow creation order (arm by arm), so the page's HTML could hint at the arm.
    token: str = field(default_factory=lambda: secrets.token_hex(8))

    @classmethod
    def of(cls, task: StudyTask) -> StudyScreen:
        """A fresh screen; an edit of a Likert answer starts from the scores it revises."""
        draft = None
        if task.kind is StudyKind.likert:
            draft = LikertDraft()
            prev = task.previous
            if prev is not None and prev.skip_reason is None:
                draft.scores = {c: getattr(prev, c) for c in CRITERIA}
        return cls(task, draft)

    @property
    def key(self) -> str:
        return self.token

    def page_keys(self) -> tuple[str, ...]:
        return LIKERT_PAGE_KEYS if self.task.kind is StudyKind.likert else PAIRWISE_PAGE_KEYS


@dataclass
class StudyApplied:
    seen: int  # the newest press dealt with: later calls skip up to it
    leave: str | None = None  # "submit", "reopen" or "cancel_edit": the page does it and moves on
    choice: StudyChoice | None = None  # a pairwise submit's answer
    scores: LikertScores | None = None  # a Likert submit's answer
    reason: str | None = None  # a skip's reason
    warning: str | None = None  # the last press could not do what it asked (Enter before all three rated)


def apply_presses(screen: StudyScreen, events: list[dict], seen: int) -> StudyApplied:
    """Apply the presses after `seen` made on this screen's item, in order, up to one that leaves it."""
    newest, todo = unapplied(events, screen.key, seen)
    out = StudyApplied(newest)
    for ev in todo:
        press(screen, ev["key"], out, shift=bool(ev.get("shift")), text=ev.get("text"))
        if out.leave is not None:
            break
    return out


def press(screen: StudyScreen, key: str, out: StudyApplied, shift: bool = False, text: str | None = None) -> None:
    """One key (or the button that stands for it) on `screen`; what to do next goes into `out`."""
    out.warning = None  # only the last press's warning is still true
    if shift and key != "Tab":
        return  # a shifted digit or letter is not an answer (the listener lets only Shift+Tab through)
    if key == UNDO_KEY:
        if not screen.task.is_edit:
            out.leave = "reopen"
    elif key == ESCAPE:
        if screen.skipping:
            screen.skipping = False
        elif screen.task.is_edit:
            out.leave = "cancel_edit"
    elif screen.skipping:  # the panel asks for a reason: 1-4, or Enter in its text box
        if key.isdigit() and 1 <= int(key) <= len(SKIP_REASONS):
            out.leave, out.reason = "submit", SKIP_REASONS[int(key) - 1]
        elif key == "Enter" and (text or "").strip():
            out.leave, out.reason = "submit", text.strip()
    elif key == SKIP_KEY:
        screen.skipping = True
    elif screen.likert is None:
        if (choice := pairwise_choice(key)) is not None:
            out.leave, out.choice = "submit", choice
    else:
        what = screen.likert.press(key, shift)
        if what == "submit":
            out.leave, out.scores = "submit", screen.likert.result()
        elif what == "incomplete":
            out.warning = LIKERT_INCOMPLETE
