"""The judging keys: a small component that queues key presses, and the rule that applies them.

The component takes the keys a page asks for (`pressed(keys=...)`): the study pages use it too, with
their own keys and rules (annotator/study_keys.py), and the same `unapplied` bookkeeping.

Button shortcuts lost keys: Streamlit merges two presses of one button that arrive while a rerun is
pending, so a quick `Enter Enter` counted once and the next number landed in the wrong step. The
component instead keeps a numbered log of the recent presses as its state (each log holds the one
before, so whichever the server sees last misses nothing); the page applies the presses it has not
applied yet, in order, each only to the task that was on screen when it was pressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import streamlit as st

from storyloop.annotator.work_queue import Task
from storyloop.annotator.submit import SKIP_REASONS

NOTHING_RANKED = "Nothing to submit yet: press the number of the best candidate (or T for a tie), then Enter."

# Streamlit calls the default export again on every data change without the previous cleanup, so the
# module keeps one listener and the latest mount (its task key and setter).
JS = """
// seq starts at the clock (ms), so a re-evaluated module still numbers after any press it sent before
let mounted = null, log = [], seq = Date.now();

// The task on screen. A press is for what the annotator sees: the page marks its task in the DOM, which
// the browser draws a moment before Streamlit hands this module the new data (in an effect, after an
// import), and a press in between would carry the task just submitted and be dropped. A marker in an
// element left over from the previous run (data-stale) loses to a fresh one.
function taskOnScreen() {
  const marks = [...document.querySelectorAll("[data-sl-task]")];
  const mark = marks.find((el) => !el.closest('[data-stale="true"]')) || marks[0];
  return mark ? mark.dataset.slTask : mounted.data.task;
}

function onKey(e) {
  if (!mounted || e.repeat || e.isComposing || e.ctrlKey || e.metaKey || e.altKey) return;
  const digit = /^(?:Digit|Numpad)([1-9])$/.exec(e.code);  // the code: Shift+1 types "!"
  const key = digit ? digit[1] : e.key.length === 1 ? e.key.toLowerCase() : e.key;
  // only the page's keys (a key it does not take, Tab on the judging page, keeps its browser meaning);
  // Shift only with a digit (the zoom) or Tab (back a criterion): other shifted keys are someone typing
  if (!mounted.data.keys.includes(key) || (e.shiftKey && !digit && key !== "Tab")) return;
  let text = null;
  const field = e.target instanceof Element && e.target.closest("input, textarea, select, [contenteditable]");
  if (field) {  // typing: only Esc is ours, and Enter in the skip reason box
    if (key === "Enter" && field.closest('[class*="st-key-skip-text-"]')) text = field.value;
    else if (key !== "Escape") return;
  }
  if (key === "Escape" && document.querySelector('[role="dialog"]')) return;  // Esc closes the zoom (or a popover) first
  e.preventDefault();
  const { applied, session } = mounted.data;
  const press = { seq: ++seq, key, shift: e.shiftKey, task: taskOnScreen(), session, text };
  log = [...log.filter((ev) => ev.seq > applied), press].slice(-50);
  mounted.setStateValue("events", log);
}

export default function (component) {
  mounted = component;
  // applied is 0 only for a session that has taken no press yet: what an earlier session (before a
  // server restart) logged is not for it, and would replay on a draft that lost its marks
  if (!component.data.applied) log = [];
  document.addEventListener("keydown", onKey, true);  // the same listener twice is one listener
  return () => {
    if (mounted !== component) return;  // a stale mount's cleanup
    document.removeEventListener("keydown", onKey, true);
    mounted = null;
  };
}
"""

_keyboard = st.components.v2.component("storyloop_judging_keys", js=JS)


def on_screen(task_key: str) -> str:
    """The attribute that marks an element as showing `task_key`: key presses are for the task the page shows,
    even while the listener still holds the previous task's data. The judging page puts it on the prompt (a
    press only marks, and the prompt names the scenario); the study pages after the images (a press answers)."""
    return f'data-sl-task="{escape(task_key, quote=True)}"'


JUDGING_KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "t", "s", "u", "Enter", "Backspace", "Escape")


def pressed(task_key: str, applied: int, session: str, keys: tuple[str, ...] = JUDGING_KEYS,
            element: str = "judging-keys", carried_after: int | None = None) -> list[dict]:
    """Listen for `keys` while `task_key` is on screen; the log of recent presses, oldest first.

    `keys` are digits "1"-"9", lower-case letters, or key names ("Enter", "Tab", "ArrowLeft", ...); the
    listener takes (and stops the browser's own action of) only these. Each press is {seq, key, shift,
    task, session, text}: seq grows by one a press; text is the skip reason box's text for an Enter typed
    in it. Only presses made in this Streamlit `session` come back: after a server restart the tab sends
    its old log with the new session's first runs, and those presses, some applied long ago, would land
    on a fresh draft of the same task. `element` is the listener's element key (ui.CSS hides it).

    `carried_after`: the seq of the newest press whose effect the restored draft holds (stored with it). Presses
    of `task_key` from an earlier session after that one were never applied (made while the server was
    away, or lost with it), so they come back too: no mark is dropped, none is applied twice (a zoom is not
    carried: the page it would open on is gone).
    """
    result = _keyboard(key=element, data={"task": task_key, "applied": applied, "session": session,
                                          "keys": list(keys)},
                       default={"events": []}, on_events_change=lambda: None)
    return [ev for ev in result.events or [] if ev.get("session") == session
            or (carried_after is not None and ev.get("task") == task_key and ev.get("seq", 0) > carried_after
                and not _looks_only(ev))]


def _looks_only(ev: dict) -> bool:
    """A press that only shows something (Shift+N opens the zoom): not worth carrying into a new session."""
    return bool(ev.get("shift")) and str(ev.get("key", "")).isdigit()


def unapplied(events: list[dict], task_key: str, seen: int) -> tuple[int, list[dict]]:
    """(the newest press's seq, the presses after `seen` made while `task_key` was on screen, in order).

    Whoever applies them stops at a press that leaves the task: the ones after it were meant for a page
    that is gone. Presses made while another task was on screen are dropped.
    """
    newest = max([seen, *(ev["seq"] for ev in events)])
    return newest, [ev for ev in sorted(events, key=lambda ev: ev["seq"])
                    if ev["seq"] > seen and ev.get("task") == task_key]


@dataclass
class Applied:
    seen: int  # the newest press dealt with (applied or dropped): later calls skip up to it
    leave: str | None = None  # "submit", "reopen" or "cancel_edit": the page does it and moves on
    reason: str | None = None  # a submit's skip reason; None submits the labels
    zoom: int | None = None  # the candidate position to show at full resolution
    warning: str | None = None  # the last press could not do what it asked (Enter with nothing ranked)


def apply(task: Task, events: list[dict], seen: int) -> Applied:
    """Apply the presses after `seen` to `task`, in order, up to one that leaves the task.

    Presses made while another task was on screen are dropped, and so are those after a leaving one:
    they were meant for a page that is gone.
    """
    newest, todo = unapplied(events, task.idempotency_key, seen)
    out = Applied(newest)
    for ev in todo:
        out.warning = None  # only the last press's warning is still true
        _press(task, ev, out)
        if out.leave is not None:
            break
    return out


def _press(task: Task, ev: dict, out: Applied) -> None:
    d, key = task.draft, ev["key"]
    if key.isdigit() and ev.get("shift"):
        out.zoom = int(key)
    elif key == "u":
        if not task.is_edit:
            out.leave = "reopen"
    elif key == "Escape":
        if task.skipping:
            task.skipping = False
        elif task.is_edit:
            out.leave = "cancel_edit"
    elif task.skipping:  # the panel asks for a reason: 1-4, or Enter in its text box
        if key.isdigit() and int(key) <= len(SKIP_REASONS):
            out.leave, out.reason = "submit", SKIP_REASONS[int(key) - 1]
        elif key == "Enter" and (ev.get("text") or "").strip():
            out.leave, out.reason = "submit", ev["text"].strip()
    elif key.isdigit():
        d.toggle(int(key))
    elif key == "Enter":
        what = d.enter()
        if what == "submit":
            out.leave = "submit"
        elif what == "incomplete":
            out.warning = NOTHING_RANKED
    elif key == "Backspace":
        d.back()
    elif key == "a":
        d.mark_all_bad()
    elif key == "t":
        d.toggle_tie()
    elif key == "s":
        task.skipping = True
