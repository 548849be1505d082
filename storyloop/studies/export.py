"""Every answer of a study, with the arms revealed: CSV or parquet, for researchers.

One row per stored revision (skips and superseded revisions included; `latest` marks the ones results count),
so nothing an annotator did is lost in the export.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.db.models import Scenario, StudyAnswer, StudyArm, StudyImage, StudyItem, StudyKind, User
from storyloop.queueing import aware
from storyloop.studies.errors import StudyError
from storyloop.studies.generate import get_study
from storyloop.studies.results import latest_answers

EXPORT_COLUMNS = ["study", "kind", "item", "scenario", "story", "seed_index", "seed", "annotator", "revision",
                  "latest", "arm_left", "arm_right", "choice", "chosen_arm", "arm", "cc", "sc", "sa", "skip_reason",
                  "shown_at", "submitted_at", "seconds"]
_INT_COLUMNS = ["seed_index", "seed", "revision", "cc", "sc", "sa"]


def answers_table(session: Session, name: str) -> pd.DataFrame:
    """Every revision of every answer of study `name`, arms by name."""
    study = get_study(session, name)
    arms = dict(session.execute(select(StudyArm.id, StudyArm.name).where(StudyArm.study_id == study.id)).all())
    users = dict(session.execute(select(User.id, User.username)).all())
    scenarios = {sc.id: sc for sc in session.scalars(select(Scenario).where(Scenario.round_id == study.round_id))}
    seeds = {(sid, i): seed for sid, i, seed in session.execute(
        select(StudyImage.scenario_id, StudyImage.seed_index, StudyImage.seed).join(StudyArm)
        .where(StudyArm.study_id == study.id, StudyImage.seed.is_not(None)))}
    latest = {a.id for a in latest_answers(session, study.id)}
    rows = []
    for a, item in session.execute(select(StudyAnswer, StudyItem).join(StudyItem)
                                   .where(StudyItem.study_id == study.id)
                                   .order_by(StudyItem.position, StudyAnswer.user_id, StudyAnswer.revision)):
        sc = scenarios.get(item.scenario_id)
        chosen = {"left": a.left_arm_id, "right": a.right_arm_id}.get(a.choice.value if a.choice else None)
        rows.append({
            "study": study.name, "kind": StudyKind(study.kind).value, "item": item.key,
            "scenario": sc.key if sc else None, "story": sc.story_id if sc else item.story_id,
            "seed_index": item.seed_index, "seed": seeds.get((item.scenario_id, item.seed_index)) if sc else None,
            "annotator": users[a.user_id], "revision": a.revision, "latest": a.id in latest,
            "arm_left": arms.get(a.left_arm_id), "arm_right": arms.get(a.right_arm_id),
            "choice": a.choice.value if a.choice else None, "chosen_arm": arms.get(chosen),
            "arm": arms[item.arm_a_id] if item.arm_b_id is None else None,
            "cc": a.cc, "sc": a.sc, "sa": a.sa, "skip_reason": a.skip_reason,
            "shown_at": _utc(a.shown_at), "submitted_at": _utc(a.submitted_at),
            "seconds": (aware(a.submitted_at) - aware(a.shown_at)).total_seconds()})
    table = pd.DataFrame(rows, columns=EXPORT_COLUMNS)
    # Integers stay integers where a skip or the other kind leaves them empty (nullable, not floats).
    return table.astype({c: "Int64" for c in _INT_COLUMNS} | {"latest": "boolean"})


def _utc(dt: datetime) -> datetime:
    """UTC as one zone on every backend (PostgreSQL hands back Etc/UTC, SQLite naive)."""
    return aware(dt).astimezone(timezone.utc)


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    rows: int
    answers: int  # latest revisions


def export_study(session: Session, name: str, out: Path) -> ExportSummary:
    """Write the answers table to `out` (.csv or .parquet), atomically: a failed export leaves no file."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise StudyError(f"{out}: the export is a .csv or a .parquet file")
    if not out.parent.is_dir():
        raise StudyError(f"{out.parent}: no such folder")
    table = answers_table(session, name)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".export-", suffix=suffix)
    os.close(fd)
    try:
        Path(tmp).write_bytes(encode_answers(table, suffix))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ExportSummary(out, len(table), int(table["latest"].sum()) if len(table) else 0)


def encode_answers(table: pd.DataFrame, suffix: str) -> bytes:
    """The answers table as the bytes of a .csv (formula-safe: skip reasons are typed by annotators) or a
    .parquet file; the Results page's downloads and `export_study` write the same bytes."""
    if suffix == ".csv":
        from storyloop.annotator.stats import to_safe_csv

        return to_safe_csv(table)
    if suffix == ".parquet":
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        return buf.getvalue()
    raise StudyError(f"the export is a .csv or a .parquet file, not {suffix!r}")


def read_export(path: Path) -> pd.DataFrame:
    """An export read back with its types (CSV loses them; this restores them); empty text cells are None."""
    path = Path(path)
    text = [c for c in EXPORT_COLUMNS if c not in _INT_COLUMNS + ["latest", "seconds", "shown_at", "submitted_at"]]
    if path.suffix.lower() == ".parquet":
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, dtype={c: "Int64" for c in _INT_COLUMNS} | {"latest": "boolean"}
                            | {c: object for c in text})
        for c in ("shown_at", "submitted_at"):
            table[c] = pd.to_datetime(table[c], format="ISO8601")
    return table.assign(**{c: table[c].astype(object).where(table[c].notna(), None) for c in text})
