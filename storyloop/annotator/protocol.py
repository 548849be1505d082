"""The judging protocol as a small state machine, free of Streamlit and of the database.

The paper's hierarchy, one step at a time: character consistency for every candidate, then
anatomical integrity for those that passed, then aesthetics among the survivors (pick the best, or
rank them, or call a tie). Number keys toggle a candidate in the current step; Enter advances, and
submits at the last step. A draft always knows the outcome and labels it would submit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from storyloop.db.judgments import Label
from storyloop.db.models import Judgment, Outcome


class Step(str, Enum):
    consistency = "consistency"
    anatomy = "anatomy"
    aesthetics = "aesthetics"
    all_bad = "all_bad"  # no candidate survived: nothing left to ask, Enter submits "all bad"


STEP_TITLES = {
    Step.consistency: "Character consistency",
    Step.anatomy: "Anatomical integrity",
    Step.aesthetics: "Aesthetics & prompt",
    Step.all_bad: "All bad",
}


@dataclass
class Draft:
    """An annotator's labels for one scenario, before they are submitted."""

    order: list[int]  # candidate ids as shown, left to right; key N toggles order[N-1]
    step: Step = Step.consistency
    # Every candidate starts as "pass": annotators mark the failures, which are the rarer event.
    consistency: dict[int, bool] = field(default_factory=dict)
    anatomy: dict[int, bool] = field(default_factory=dict)
    ranking: list[int] = field(default_factory=list)  # best first
    tie: bool = False
    untied: list[int] = field(default_factory=list)  # the ranking a tie set aside; T again brings it back

    def __post_init__(self):
        for cid in self.order:
            self.consistency.setdefault(cid, True)
            self.anatomy.setdefault(cid, True)

    # -- what the labels say -----------------------------------------------------------------

    def consistent(self) -> list[int]:
        return [c for c in self.order if self.consistency[c]]

    def survivors(self) -> list[int]:
        return [c for c in self.consistent() if self.anatomy[c]]

    def active(self) -> list[int]:
        """The candidates the current step asks about."""
        return {Step.consistency: self.order, Step.anatomy: self.consistent(),
                Step.aesthetics: self.survivors(), Step.all_bad: []}[self.step]

    def ready(self) -> bool:
        """Whether Enter submits now (rather than advancing a step)."""
        if self.step is Step.all_bad:
            return True
        if self.step is Step.aesthetics:
            return self.tie or bool(self.ranking)
        return False

    def at_last_step(self) -> bool:
        """Whether Enter means submit here (it does once the judgment is complete, see `ready`)."""
        return self.step in (Step.aesthetics, Step.all_bad)

    def hint(self, characters: tuple[str, ...] | list[str] = ()) -> str:
        """What the annotator is asked to do in this step, in one line. With several named `characters`, a
        candidate is consistent only if it keeps every one of them."""
        n = len(self.active())
        who = (f"every character of the references ({', '.join(characters)})? A candidate fails if any of them "
               "drifts." if len(characters) > 1 else "the character of the references (face, hair, attire)?")
        return {
            Step.consistency: f"Does each candidate keep {who} Press a number to mark a failure.",
            Step.anatomy: f"Anatomy of the {n} consistent candidate(s): press a number to mark a failure.",
            Step.aesthetics: ("Press numbers in order of preference: the first is the best. T for a tie."
                              if n > 1 else "The only survivor wins."),
            Step.all_bad: "No candidate passed both checks: Enter submits 'all bad'.",
        }[self.step]

    # -- keys ----------------------------------------------------------------------------------

    def toggle(self, position: int) -> None:
        """Number key `position` (1-based, in shown order) in the current step."""
        if not 1 <= position <= len(self.order):
            return
        cid = self.order[position - 1]
        if cid not in self.active():
            return
        if self.step is Step.consistency:
            self.consistency[cid] = not self.consistency[cid]
        elif self.step is Step.anatomy:
            self.anatomy[cid] = not self.anatomy[cid]
        elif self.step is Step.aesthetics:
            self.tie, self.untied = False, []  # a number after a tie starts a new ranking
            if cid in self.ranking:
                self.ranking.remove(cid)
            else:
                self.ranking.append(cid)
        self._prune()

    def advance(self) -> None:
        """Enter before the last step: move on to the next question."""
        if self.step is Step.consistency:
            self.step = Step.anatomy if self.consistent() else Step.all_bad
        elif self.step is Step.anatomy:
            self.step = Step.aesthetics if self.survivors() else Step.all_bad
        if self.step is Step.aesthetics and len(self.survivors()) == 1:
            self.ranking = self.survivors()  # a single survivor is the winner; nothing to ask
        self._prune()

    def enter(self) -> str:
        """The Enter key, for the button and the queued keys alike: "submit" once the judgment is
        complete, "incomplete" at the last step before it is (nothing ranked yet), else it advances a
        step and says "advanced"."""
        if self.ready():
            return "submit"
        if self.at_last_step():
            return "incomplete"
        self.advance()
        return "advanced"

    def back(self) -> None:
        if self.step is Step.all_bad:
            self.step = Step.anatomy if self.consistent() else Step.consistency
        elif self.step is Step.aesthetics:
            self.step = Step.anatomy
        elif self.step is Step.anatomy:
            self.step = Step.consistency

    def mark_all_bad(self) -> None:
        """'A': every candidate still in play fails the current check."""
        if self.step is Step.consistency:
            self.consistency = {c: False for c in self.order}
        elif self.step is Step.anatomy:
            self.anatomy.update({c: False for c in self.consistent()})
        else:
            return
        self.step = Step.all_bad
        self._prune()

    def toggle_tie(self) -> None:
        """'T': call a tie, or take it back and get the ranking that was there before."""
        if self.step is Step.aesthetics and len(self.survivors()) >= 2:
            self.tie = not self.tie
            self.ranking, self.untied = (([], self.ranking) if self.tie else (self.untied, []))
            self._prune()

    def _prune(self) -> None:
        # A candidate that no longer survives cannot keep a rank.
        survivors = set(self.survivors())
        self.ranking = [c for c in self.ranking if c in survivors]
        self.untied = [c for c in self.untied if c in survivors]
        if len(survivors) < 2:
            self.tie = False

    # -- the result ----------------------------------------------------------------------------

    def result(self) -> tuple[Outcome, dict[int, Label]]:
        """The outcome and per-candidate labels this draft submits (valid for `submit_judgment`)."""
        if not self.ready():
            raise ValueError("the judgment is not complete: " + self.hint())
        labels: dict[int, Label] = {}
        rank = {cid: i + 1 for i, cid in enumerate(self.ranking)}
        for cid in self.order:
            if not self.consistency[cid]:
                labels[cid] = Label(False)
            else:
                ok = self.anatomy[cid]
                labels[cid] = Label(True, ok, rank.get(cid) if ok and not self.tie else None)
        if not self.survivors():
            return Outcome.all_bad, labels
        return (Outcome.tie if self.tie else Outcome.ranked), labels

    def status(self, cid: int) -> str:
        """A short label for a candidate's card: where it stands in the hierarchy."""
        if not self.consistency[cid]:
            return "inconsistent"
        if self.step is Step.consistency:
            return "consistent"
        if not self.anatomy[cid]:
            return "bad anatomy"
        if self.step is Step.anatomy:
            return "anatomy ok"
        if self.tie:
            return "tie"
        if cid in self.ranking:
            return "best" if self.ranking[0] == cid else f"rank {self.ranking.index(cid) + 1}"
        return "unranked"

    # -- kept between sessions -------------------------------------------------------------------

    def to_state(self) -> dict:
        """The marks as plain JSON, stored on the lease so that a reload or a second tab resumes them."""
        return {"order": list(self.order), "step": self.step.value,
                "consistency_fail": [c for c in self.order if not self.consistency[c]],
                "anatomy_fail": [c for c in self.order if not self.anatomy[c]],
                "ranking": list(self.ranking), "tie": self.tie, "untied": list(self.untied)}

    @classmethod
    def from_state(cls, order: list[int], state: dict | None) -> Draft:
        """The draft `to_state` stored, for the grid `order`; a fresh draft if there is none or it no longer
        fits (another grid, say after candidates were added; an unknown step; a damaged value). Marks that
        land on the wrong candidate, or a crash on every reload, would be worse than starting over."""
        fresh = cls(order=list(order))
        try:
            if state is None or list(state["order"]) != list(order):
                return fresh
            step = Step(state["step"])
            failed_c, failed_a = set(state["consistency_fail"]), set(state["anatomy_fail"])
            ranking, untied, tie = list(state["ranking"]), list(state["untied"]), state["tie"]
        except (KeyError, TypeError, ValueError):
            return fresh
        named = failed_c | failed_a | set(ranking) | set(untied)
        if (not named <= set(order) or not isinstance(tie, bool)
                or len(set(ranking)) != len(ranking) or len(set(untied)) != len(untied)):
            return fresh
        draft = cls(order=list(order), step=step, consistency={c: c not in failed_c for c in order},
                    anatomy={c: c not in failed_a for c in order}, ranking=ranking, tie=tie, untied=untied)
        draft._prune()
        return draft if draft._step_fits() else fresh

    def _step_fits(self) -> bool:
        """Whether the step is one the keys could have reached with these marks."""
        return {Step.consistency: True, Step.anatomy: bool(self.consistent()),
                Step.aesthetics: bool(self.survivors()), Step.all_bad: not self.survivors()}[self.step]

    @classmethod
    def from_judgment(cls, judgment: Judgment) -> Draft:
        """A draft holding a stored judgment's labels, at its last step (for an edit)."""
        draft = cls(order=list(judgment.shown_order))
        if judgment.outcome == Outcome.skipped:
            return draft
        for lab in judgment.labels:
            draft.consistency[lab.candidate_id] = lab.consistency_pass
            if lab.anatomy_pass is not None:
                draft.anatomy[lab.candidate_id] = lab.anatomy_pass
        ranked = sorted((lab.aesthetics_rank, lab.candidate_id) for lab in judgment.labels
                        if lab.aesthetics_rank is not None)
        draft.ranking = [cid for _, cid in ranked]
        draft.tie = judgment.outcome == Outcome.tie
        draft.step = Step.aesthetics if draft.survivors() else Step.all_bad
        return draft
