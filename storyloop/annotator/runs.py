"""What the Runs page shows: every DPO run with its status, config and curves, read from the database."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.annotator.work_queue import aware
from storyloop.db.models import DpoMetric, DpoRun, Round, Study, StudyArm, utcnow

# The curves that say whether a run learned (trl's names); every eval/* metric is drawn too.
CURVES = ("loss", "rewards/accuracies", "rewards/margins", "grad_norm")
RUN_COLUMNS = ["run", "round", "status", "steps", "loss", "rewards/accuracies", "rewards/margins", "started",
               "minutes", "pair set", "artifact", "studies", "failure"]


def runs_table(session: Session) -> pd.DataFrame:
    """One row per run, newest first: status, steps logged, the last logged loss/accuracy/margin."""
    rounds = dict(session.execute(select(Round.id, Round.name)).all())
    used_in = studies_by_run(session)
    rows = []
    for run in session.scalars(select(DpoRun).order_by(DpoRun.id.desc())):
        last = session.scalar(select(DpoMetric).where(DpoMetric.run_id == run.id)
                              .order_by(DpoMetric.step.desc()).limit(1))
        values = last.values if last is not None else {}
        minutes = (aware(run.finished_at or utcnow()) - aware(run.started_at)).total_seconds() / 60
        rows.append({"run": run.id, "round": rounds.get(run.round_id), "status": run.status.value,
                     "steps": last.step if last is not None else 0, "loss": values.get("loss"),
                     "rewards/accuracies": values.get("rewards/accuracies"),
                     "rewards/margins": values.get("rewards/margins"), "started": run.started_at,
                     "minutes": round(minutes, 1), "pair set": run.pair_set_sha256[:12],
                     "artifact": run.artifact_path, "studies": ", ".join(used_in.get(run.id, [])),
                     "failure": run.failure_reason})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def studies_by_run(session: Session) -> dict[int, list[str]]:
    """run id -> the studies with an arm that uses the run's LoRA: the same folder, or (moved or copied) the
    same content hash as the round and arm records."""
    from storyloop.hashing import sha256_path

    arms = session.execute(select(Study.name, StudyArm.name, StudyArm.dpo_lora_path, StudyArm.dpo_lora_sha256)
                           .join(Study, Study.id == StudyArm.study_id)
                           .where(StudyArm.dpo_lora_path.is_not(None)).order_by(Study.id, StudyArm.id)).all()
    out: dict[int, list[str]] = {}
    if not arms:
        return out
    for run_id, artifact in session.execute(select(DpoRun.id, DpoRun.artifact_path)
                                            .where(DpoRun.artifact_path.is_not(None))):
        folder = Path(artifact)
        digest = None
        for study, arm, path, sha in arms:
            same = Path(path).resolve() == folder.resolve()
            if not same and sha and folder.exists():
                digest = digest or sha256_path(folder)
                same = digest == sha
            if same:
                out.setdefault(run_id, []).append(f"{study} ({arm})")
    return out


def run_curves(session: Session, run_id: int) -> pd.DataFrame:
    """Long format (step, metric, value) of the curves: CURVES and every eval/* metric, in step order."""
    rows = []
    for step, values in session.execute(select(DpoMetric.step, DpoMetric.values)
                                        .where(DpoMetric.run_id == run_id).order_by(DpoMetric.step)):
        for name, value in values.items():
            if (name in CURVES or name.startswith("eval/")) and isinstance(value, int | float):
                rows.append({"step": step, "metric": name, "value": float(value)})
    return pd.DataFrame(rows, columns=["step", "metric", "value"])


def run_detail(session: Session, run_id: int) -> dict:
    """The run's config, pair-set hash, code version, status and failure reason, as stored."""
    run = session.get(DpoRun, run_id)
    if run is None:
        raise LookupError(f"no DPO run with id {run_id}")
    return {"config": run.config, "pair_set_sha256": run.pair_set_sha256, "code_version": run.code_version,
            "status": run.status.value, "failure_reason": run.failure_reason, "artifact_path": run.artifact_path,
            "round": session.get(Round, run.round_id).name}
