"""What `study list` and `study show` print: a study's arms, and how far its images and answers are."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storyloop.db.models import ArmKind, Scenario, Study, StudyAnswer, StudyArm, StudyImage, StudyItem


@dataclass(frozen=True)
class ArmOverview:
    name: str
    kind: ArmKind
    spec: str  # the folder, or base + LoRAs + reference-guidance scale
    images: int
    images_needed: int


@dataclass(frozen=True)
class StudyOverview:
    study: Study
    round_name: str
    arms: list[ArmOverview]
    items: int
    answers: int  # stored revisions, skips included


def arm_spec_text(arm: StudyArm) -> str:
    if arm.kind is ArmKind.folder:
        return f"folder {arm.folder}"
    parts = [f"base={arm.base_model}"]
    parts += [f"{k}={p}" for k, p in (("stage1", arm.stage1_lora_path), ("dpo", arm.dpo_lora_path)) if p]
    return ",".join(parts + [f"ref_scale={arm.reference_guidance_scale:g}"])


def study_overviews(session: Session, name: str | None = None) -> list[StudyOverview]:
    query = select(Study).order_by(Study.id)
    if name is not None:
        query = query.where(Study.name == name)
    out = []
    for study in session.scalars(query):
        scenarios = session.scalar(select(func.count()).select_from(Scenario).where(Scenario.round_id == study.round_id))
        images = dict(session.execute(select(StudyImage.arm_id, func.count()).join(StudyArm)
                                      .where(StudyArm.study_id == study.id).group_by(StudyImage.arm_id)).all())
        arms = [ArmOverview(a.name, ArmKind(a.kind), arm_spec_text(a), images.get(a.id, 0), scenarios * study.seeds)
                for a in study.arms]
        items = session.scalar(select(func.count()).select_from(StudyItem).where(StudyItem.study_id == study.id))
        answers = session.scalar(select(func.count()).select_from(StudyAnswer).join(StudyItem)
                                 .where(StudyItem.study_id == study.id))
        out.append(StudyOverview(study, study.round.name, arms, items, answers))
    return out
