"""The small inputs the GPU check feeds to the real commands: pictures, a Stage-1 dataset, scenario files and
the judgments that make a round trainable by DPO.

Pictures are flat shapes drawn with PIL (what they show does not matter to a speed or memory figure); the
judgments go through `storyloop.db.judgments.submit_judgment`, the annotator's own write path.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image, ImageDraw

CHARACTERS = ("fox", "owl", "cat")
COLOURS = {"fox": (200, 90, 30), "owl": (90, 70, 160), "cat": (40, 140, 90)}
SCENES = ("reads a book in the garden", "sleeps under a tree", "walks by the river", "eats an apple")


def caption(character: str, frame: int) -> str:
    return f"a {character} {SCENES[frame % len(SCENES)]}"


def words() -> list[str]:
    """Every word the check's prompts use: the random pipeline's tokenizers know exactly these."""
    return sorted({w for c in CHARACTERS for f in range(len(SCENES)) for w in caption(c, f).split()})


def picture(path: Path, size: int, character: str, frame: int) -> Path:
    """A `size` x `size` PNG: the character's colour as a disc that moves with the frame."""
    img = Image.new("RGB", (size, size), (235, 230, 220))
    draw = ImageDraw.Draw(img)
    r = size // 4
    cx = size // 4 + (frame * size // 7) % (size // 2)
    draw.ellipse((cx - r, size // 2 - r, cx + r, size // 2 + r), fill=COLOURS[character])
    draw.rectangle((0, size - size // 8, size, size), fill=(120, 110, 100))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def stage1_dataset(folder: Path, size: int, per_group: int = 3) -> Path:
    """A Stage-1 dataset: one group per character with `per_group` images (a target + 2 references)."""
    rows = []
    for character in CHARACTERS[:2]:
        for frame in range(per_group):
            name = f"{character}{frame}.png"
            picture(folder / name, size, character, frame)
            rows.append({"group": character, "image": name, "caption": caption(character, frame)})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def scenarios_file(folder: Path, size: int, scenarios: int, refs: int, candidates: int = 0) -> Path:
    """A round's scenarios JSONL with `refs` reference pictures each (and `candidates` imported candidates)."""
    rows = []
    for s in range(scenarios):
        character = CHARACTERS[s % len(CHARACTERS)]
        ref_names = [f"s{s}-ref{r}.png" for r in range(refs)]
        cand_names = [f"s{s}-cand{c}.png" for c in range(candidates)]
        for i, name in enumerate(ref_names + cand_names):
            picture(folder / name, size, character, s + i)
        rows.append({"id": f"s{s}", "story_id": character, "frame_index": s, "prompt": caption(character, s + 1),
                     "references": ref_names, "candidates": cand_names})
    path = folder / "scenarios.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def judge_round(db_url: str, round_name: str, annotators: int = 3) -> int:
    """Every scenario of the round judged alike by `annotators` new annotators: candidate 0 best, 1 second,
    2 fails anatomy, any others fail consistency (so each scenario gives winner x loser pairs at every level).
    Returns the number of judgments written."""
    from sqlalchemy import select

    from storyloop.db import session_scope
    from storyloop.db.judgments import JudgmentIn, Label, submit_judgment
    from storyloop.db.models import Outcome, Role, Round, Scenario
    from storyloop.db.users import add_user

    with session_scope(db_url) as session:
        users = [add_user(session, f"{round_name}-judge{i}", secrets.token_urlsafe(16), Role.annotator).id
                 for i in range(annotators)]
    with session_scope(db_url) as session:
        scenarios = session.scalars(select(Scenario).join(Round).where(Round.name == round_name)
                                    .order_by(Scenario.id))
        plan = [(sc.id, [c.id for c in sorted(sc.candidates, key=lambda c: c.index)]) for sc in scenarios]
    verdicts = [Label(True, True, 1), Label(True, True, 2), Label(True, False)]
    written = 0
    for scenario_id, candidate_ids in plan:
        labels = {cid: verdicts[i] if i < len(verdicts) else Label(False) for i, cid in enumerate(candidate_ids)}
        for user_id in users:
            judgment = JudgmentIn(scenario_id=scenario_id, user_id=user_id,
                                  idempotency_key=f"gpu-check-{scenario_id}-{user_id}", outcome=Outcome.ranked,
                                  shown_order=list(candidate_ids), shown_at=datetime.now(timezone.utc), labels=labels)
            with session_scope(db_url) as session:
                submit_judgment(session, judgment)
            written += 1
    return written
