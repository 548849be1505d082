"""A ViStoryBench round's images in the folders the official evaluator reads:

    OUT/<method>/<mode>/<lang>/<YYYYMMDD_HHMMSS>/<NN>/shots/shot_XX.png

(ViStoryBench/vistorybench at 514cc31, vistorybench/dataset_loader/read_outputs.py: story folders must be
numbers, a shot's index is the number after the last `_` of its file name). One image per shot, chosen by
`pick`:

- `winner`: the candidate people preferred, from the same aggregation the DPO pools use
  (storyloop/dpo/pools.py, default policy: at least 2 judgments, 60 % agreement per label). Among several
  winners, the one with the highest agreement, then the lowest index. A shot that was not judged, or was judged
  without a clear winner (too few judgments, a tie, all bad, no loser), falls back to its first candidate, and
  the summary counts those.
- `first`: the candidate of index 0 (the lowest index there is).
- an index: that candidate of every shot.

The timestamp folder is written whole or not at all (built beside it, then renamed), and never overwritten.
`storyloop-export.json` beside the story folders records which candidate each file is.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PIL import Image
from sqlalchemy.orm import Session

from storyloop.db.assets import asset_path
from storyloop.db.models import Candidate, Round, Scenario
from storyloop.db.rounds import RoundError, get_round
from storyloop.dpo.pools import AggregationPolicy, aggregate, labels_frame
from storyloop.vistory.dataset import LANGUAGES
from storyloop.vistory.importing import vistory_source

TIMESTAMP = re.compile(r"^\d{8}_\d{6}$")
FOLDER_NAME = re.compile(r"^[\w][\w.+-]*$")
MANIFEST = "storyloop-export.json"


@dataclass(frozen=True)
class ExportOptions:
    """What `storyloop vistory export` writes; `language` None: the round's."""

    method: str
    mode: str = "base"
    language: str | None = None
    timestamp: str | None = None  # YYYYMMDD_HHMMSS; None: now
    pick: str | int = "winner"  # winner, first, or a candidate index


@dataclass
class ExportSummary:
    folder: Path  # the timestamp folder
    stories: int
    shots: int
    picked: dict[str, int] = field(default_factory=dict)  # how each shot's image was chosen -> shots
    split: str = "full"  # the round's split: the evaluator's --split


def parse_pick(text: str) -> str | int:
    """`winner`, `first` or a candidate index (0, 1, ...)."""
    if text in ("winner", "first"):
        return text
    if text.isdigit():
        return int(text)
    raise RoundError(f"--pick {text!r}: use winner, first, or a candidate index (0, 1, ...)")


def export_round(session: Session, store_dir: Path, round_name: str, out_dir: Path,
                 options: ExportOptions) -> ExportSummary:
    """Write one PNG per shot of the round, in the evaluator's layout; RoundError says what is wrong first."""
    rnd = get_round(session, round_name)
    source = vistory_source(rnd)
    language = options.language or source["language"]
    _check_names(options, language, source["language"])
    stamp = options.timestamp or datetime.now().strftime("%Y%m%d_%H%M%S")
    if not TIMESTAMP.match(stamp) or not _real_time(stamp):
        raise RoundError(f"--timestamp {stamp!r}: expected YYYYMMDD_HHMMSS, e.g. 20260102_153000")
    target = Path(out_dir) / options.method / options.mode / language / stamp
    if target.exists():
        raise RoundError(f"{target} already exists: choose another --timestamp (nothing was written)")

    scenarios = list(rnd.scenarios)
    empty = [sc.key for sc in scenarios if not sc.candidates]
    if not scenarios:
        raise RoundError(f"round {round_name!r} has no scenarios")
    if empty:
        raise RoundError(f"round {round_name!r}: {len(empty)} scenario(s) without candidates "
                         f"({', '.join(empty[:10])}{' …' if len(empty) > 10 else ''}): run "
                         f"`storyloop generate run --round {round_name}` first")
    chosen = _choose(session, rnd, scenarios, options.pick)

    picked: dict[str, int] = {}
    records = []
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{stamp}.partial-"))
    try:
        for sc in scenarios:
            cand, how = chosen[sc.id]
            picked[how] = picked.get(how, 0) + 1
            rel = Path(f"{int(sc.story_id):02d}") / "shots" / f"shot_{sc.frame_index:02d}.png"
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            _write_png(asset_path(store_dir, cand.asset), cand.asset.format, dest)
            records.append({"file": rel.as_posix(), "scenario": sc.key, "candidate_index": cand.index,
                            "candidate_id": cand.id, "sha256": cand.asset.sha256, "picked": how})
        (staging / MANIFEST).write_text(json.dumps(
            {"round": round_name, "method": options.method, "mode": options.mode, "language": language,
             "timestamp": stamp, "pick": options.pick, "picked": picked, "source": source, "shots": records},
            ensure_ascii=False, indent=1), encoding="utf-8")
        os.rename(staging, target)  # whole, in one step; an existing folder was refused above
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportSummary(target, len({sc.story_id for sc in scenarios}), len(scenarios), picked, source["split"])


def _check_names(options: ExportOptions, language: str, imported: str) -> None:
    for flag, value in (("--method", options.method), ("--mode", options.mode)):
        if not FOLDER_NAME.match(value or ""):
            raise RoundError(f"{flag} {value!r}: one folder name of letters, digits, '.', '_', '+' or '-'")
    if options.mode in LANGUAGES:  # the evaluator would read <method>/<lang>/<mode>/… instead
        raise RoundError(f"--mode {options.mode!r}: en and ch are languages to the evaluator; choose another mode")
    if language != imported:
        raise RoundError(f"--lang {language!r}: the round's prompts are in {imported!r}; the evaluator would score "
                         f"the images against the other language's text")


def _real_time(stamp: str) -> bool:
    try:
        datetime.strptime(stamp, "%Y%m%d_%H%M%S")
    except ValueError:
        return False
    return True


def _choose(session: Session, rnd: Round, scenarios: list[Scenario],
            pick: str | int) -> dict[int, tuple[Candidate, str]]:
    """scenario id -> (candidate, how it was chosen)."""
    if isinstance(pick, int):
        missing = [sc for sc in scenarios if not any(c.index == pick for c in sc.candidates)]
        if missing:
            sc = missing[0]
            raise RoundError(f"--pick {pick}: {len(missing)} scenario(s) have no candidate {pick}, e.g. {sc.key} "
                             f"(its candidates: {', '.join(str(c.index) for c in sc.candidates)})")
        return {sc.id: (next(c for c in sc.candidates if c.index == pick), f"index {pick}") for sc in scenarios}
    first = {sc.id: min(sc.candidates, key=lambda c: c.index) for sc in scenarios}
    if pick == "first":
        return {sid: (c, "first") for sid, c in first.items()}
    policy = AggregationPolicy()
    judgments, labels = labels_frame(session, rnd.id, policy)
    winners = aggregate(judgments, labels, policy).winners
    by_id = {c.id: c for sc in scenarios for c in sc.candidates}
    best: dict[int, tuple[tuple[float, int], Candidate]] = {}  # scenario -> (sort key, candidate)
    for row in winners.itertuples(index=False):
        cand = by_id[int(row.candidate_id)]
        held = best.get(int(row.scenario_id))
        key = (-float(row.agreement), cand.index)
        if held is None or key < held[0]:
            best[int(row.scenario_id)] = (key, cand)
    judged = set(judgments.scenario_id.astype(int).tolist())
    out = {}
    for sc in scenarios:
        if sc.id in best:
            out[sc.id] = (best[sc.id][1], "winner")
        else:
            how = "first (judged, no clear winner)" if sc.id in judged else "first (not judged)"
            out[sc.id] = (first[sc.id], how)
    return out


def _write_png(src: Path, fmt: str, dest: Path) -> None:
    """The stored image as PNG: PNG bytes are copied as they are, anything else is converted."""
    if fmt == "PNG":
        shutil.copyfile(src, dest)
        return
    with Image.open(src) as img:
        buf = io.BytesIO()
        img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB").save(buf, format="PNG")
    dest.write_bytes(buf.getvalue())
