"""Preference-set export: every (winner, loser) pair of a round's pools, in Pick-a-Pic's columns.

One row per pair. `jpg_0` / `jpg_1` hold the two images in a seeded random order (so position
carries no label), `label_0` / `label_1` say which one people preferred (1 / 0; ties never become
pairs), `caption` is the prompt. Added columns carry what story work needs: the reference images and
each one's character (`reference_characters`, null for a flat reference list), scenario/story/frame ids, round, the loser's failure level, label agreement, and the annotators
behind the labels (stable pseudonyms with --anonymize).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.db import audit
from storyloop.db.assets import asset_path
from storyloop.db.models import Candidate, Role, Scenario, User, utcnow
from storyloop.db.rounds import get_round
from storyloop.dpo.pools import LEVELS, AggregationPolicy, labels_frame, aggregate
from storyloop.dpo.sampler import PairSampler
from storyloop.provenance import code_version
from storyloop.settings import Settings

FORMATS = ("parquet", "hf", "jsonl")


class ExportError(RuntimeError):
    pass


@dataclass
class ExportSummary:
    rows: int
    scenarios: int
    path: Path
    pair_set_sha256: str


def pseudonymizer(data_dir: Path):
    """name -> stable pseudonym, salted by a secret kept in the data directory (not reversible by hashing names)."""
    salt_file = Path(data_dir) / "pseudonym.salt"
    if not salt_file.exists():
        salt_file.parent.mkdir(parents=True, exist_ok=True)
        salt_file.write_text(secrets.token_hex(16))
    salt = salt_file.read_text().strip()
    return lambda name: "annotator-" + hashlib.sha256(f"{salt}:{name}".encode()).hexdigest()[:10]


def preference_rows(session: Session, settings: Settings, round_name: str, policy: AggregationPolicy,
                    anonymize: bool = False, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """The export table, and the sha256 of the pools it came from."""
    rnd = get_round(session, round_name)
    judgments, labels = labels_frame(session, rnd.id, policy)
    pools = aggregate(judgments, labels, policy)
    names = dict(session.execute(select(User.id, User.username)).all())
    alias = pseudonymizer(settings.data_dir) if anonymize else (lambda n: n)
    annotators = judgments.groupby("scenario_id").user_id.agg(lambda ids: sorted(alias(names[i]) for i in ids))
    members = pools.members
    scenario_ids = sorted(set(members.scenario_id.tolist()))
    scenarios = {s.id: s for s in session.scalars(select(Scenario).where(Scenario.id.in_(scenario_ids)))}
    candidates = {c.id: c for c in session.scalars(select(Candidate).where(Candidate.scenario_id.in_(scenario_ids)))}

    def image(asset) -> bytes:
        return asset_path(settings.store_dir, asset).read_bytes()

    rng = np.random.default_rng(seed)
    rows = []
    for sid in scenario_ids:
        sc = scenarios[sid]
        group = members[members.scenario_id == sid]
        refs = [image(r.asset) for r in sc.references]
        ref_characters = [r.character for r in sc.references]
        for w in group[group.is_winner].itertuples():
            for lose in group[~group.is_winner].itertuples():
                win_c, lose_c = candidates[int(w.candidate_id)], candidates[int(lose.candidate_id)]
                swap = bool(rng.random() < 0.5)
                first, second = (lose_c, win_c) if swap else (win_c, lose_c)
                people = annotators.get(sid, [])
                rows.append({
                    "caption": sc.prompt, "jpg_0": image(first.asset), "jpg_1": image(second.asset),
                    "label_0": 0.0 if swap else 1.0, "label_1": 1.0 if swap else 0.0,
                    "are_different": first.asset.sha256 != second.asset.sha256, "has_label": True,
                    "ranking_id": len(rows), "user_id": ";".join(people),
                    "references": refs, "reference_characters": ref_characters, "scenario_id": sc.key, "story_id": sc.story_id,
                    "frame_index": sc.frame_index, "round": rnd.name, "loser_level": LEVELS[int(lose.level)],
                    "winner_agreement": float(w.agreement), "loser_agreement": float(lose.agreement),
                    "annotators": people, "winner_candidate_index": win_c.index,
                    "loser_candidate_index": lose_c.index, "seed_0": first.seed, "seed_1": second.seed})
    return pd.DataFrame(rows), PairSampler(pools).fingerprint()


def export_round(session: Session, settings: Settings, round_name: str, out_dir: Path, fmt: str,
                 requested_by: User, anonymize: bool = False,
                 policy: AggregationPolicy | None = None) -> ExportSummary:
    if requested_by.role not in (Role.researcher, Role.admin) or not requested_by.is_active:
        raise ExportError(f"user {requested_by.username!r} may not export: researchers and admins only")
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    policy = policy or AggregationPolicy()
    table, pool_sha = preference_rows(session, settings, round_name, policy, anonymize)
    if table.empty:
        raise ExportError(f"round {round_name!r} has no preference pairs to export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        path = out / "train.parquet"
        table.to_parquet(path, index=False)
    elif fmt == "hf":
        import datasets

        path = out
        datasets.Dataset.from_pandas(table, preserve_index=False).save_to_disk(str(out / "dataset"))
    else:
        path = out / "train.jsonl"
        _write_jsonl(table, out, path)
    (out / "metadata.json").write_text(json.dumps({
        "round": round_name, "rows": len(table), "format": fmt, "anonymized": anonymize,
        "min_agreement": policy.min_agreement, "min_votes": policy.min_votes,
        "complete_only": policy.complete_only, "pair_set_sha256": pool_sha, "exported_by": requested_by.username,
        "exported_at": utcnow().isoformat(), "code_version": code_version()}, indent=2))
    audit.record(session, "export", actor_id=requested_by.id, target=round_name,
                 details={"format": fmt, "rows": len(table), "anonymized": anonymize, "out": str(out)})
    return ExportSummary(len(table), int(table.scenario_id.nunique()), path, pool_sha)


def _write_jsonl(table: pd.DataFrame, out: Path, path: Path) -> None:
    """Images as content-addressed files beside the JSONL; the columns hold their relative paths."""
    images = out / "images"
    images.mkdir(exist_ok=True)

    def save(data: bytes) -> str:
        ext = "png" if data.startswith(b"\x89PNG") else "jpg" if data.startswith(b"\xff\xd8") else "img"
        name = f"images/{hashlib.sha256(data).hexdigest()}.{ext}"
        if not (out / name).exists():
            (out / name).write_bytes(data)
        return name

    with open(path, "w") as fh:
        for row in table.to_dict(orient="records"):
            row["jpg_0"], row["jpg_1"] = save(row["jpg_0"]), save(row["jpg_1"])
            row["references"] = [save(r) for r in row["references"]]
            fh.write(json.dumps(row, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n")
