"""The official evaluator's verdict on a round, stored with the round so rounds can be put side by side.

The evaluator (ViStoryBench/vistorybench at 514cc31, bench_run.py and result_management/manager.py) writes
`<results>/<method>/<mode>/<lang>/<YYYYMMDD_HHMMSS>/summary.json`:

    {"run": {"method", "mode", "language", "dataset", "timestamp"},
     "metrics": {"cids": {"metrics": {"cids_cross_mean", "cids_self_mean", "occm", "copy_paste_score",
                                      "single_character_action"?}},
                 "csd": {"metrics": {"cross_csd", "self_csd"}},
                 "aesthetic": {"metrics": {"aesthetic_score"}},
                 "prompt_align": {"metrics": {"scene", "camera", "character_action"}},
                 "diversity": {"metric": …, "scope": …, "metrics": {"inception_score", "inception_score_std"}}}}

Each metric block is there only if that metric was run; each number is the mean over stories (diversity: over
all images). Any other metric name, or a block without its `metrics` object, or a value that is not a number,
is refused naming the file and the field. A block may carry numbers we do not know (the evaluator averages
every number a story result has): they stay in the stored summary, not in the figures.

Scales: CSD and CIDS are cosine similarities (0-1), OCCM is 0-100, the prompt-alignment scores are a VLM's 0-4,
aesthetics is the predictor's 1-10. The paper (Table 1) prints CSD and CIDS × 100 and an alignment score that
is the mean of scene, camera and character action ÷ 4 × 100: read so, the published leaderboard's rows for
StoryGen, StoryDiffusion, StoryAdapter and UNO (vistorybench.github.io at 020220e) give the paper's baseline
figures to the printed digit (StoryAdapter's alignment, 67.6499, is printed 67.7). `paper_scale` computes
those columns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from storyloop.db.models import BenchmarkResult, Round
from storyloop.db.rounds import RoundError, get_round
from storyloop.vistory.dataset import LANGUAGES, SPLITS
from storyloop.vistory.importing import BENCHMARK, vistory_source

# evaluator metric -> {its key -> storyloop's figure name}
KNOWN_METRICS: dict[str, dict[str, str]] = {
    "cids": {"cids_cross_mean": "cids_cross", "cids_self_mean": "cids_self", "occm": "occm",
             "copy_paste_score": "copy_paste", "single_character_action": "single_character_action"},
    "csd": {"cross_csd": "csd_cross", "self_csd": "csd_self"},
    "aesthetic": {"aesthetic_score": "aesthetics"},
    "prompt_align": {"scene": "prompt_scene", "camera": "prompt_camera", "character_action": "prompt_action"},
    "diversity": {"inception_score": "inception_score", "inception_score_std": "inception_score_std"},
}
RUN_FIELDS = ("method", "mode", "language", "timestamp")
ALIGNMENT_PARTS = ("prompt_scene", "prompt_camera", "prompt_action")
# Paper-scale columns, in Table 1's order, then the two the paper leaves out.
PAPER_COLUMNS = ("CSD cross", "CSD self", "CIDS cross", "CIDS self", "OCCM", "alignment", "aesthetics",
                 "copy-paste")


class SummaryFormatError(RoundError):
    """A summary file that is not the evaluator's summary.json; nothing was stored."""


@dataclass(frozen=True)
class Summary:
    path: Path
    run: dict  # method, mode, language, timestamp (and dataset, when there)
    figures: dict[str, float]  # storyloop's names, the evaluator's scale
    raw: dict
    sha256: str


def read_summary(path: Path) -> Summary:
    """The evaluator's summary.json, checked field by field."""
    path = Path(path)
    try:
        data_bytes = path.read_bytes()
        data = json.loads(data_bytes.decode("utf-8-sig"))
    except FileNotFoundError:
        raise SummaryFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SummaryFormatError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise SummaryFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None

    def bad(field: str, why: str) -> SummaryFormatError:
        return SummaryFormatError(f"{path}: field {field!r}: {why} (expected ViStoryBench's summary.json: "
                                  "{\"run\": {...}, \"metrics\": {\"cids\": {\"metrics\": {...}}, ...}})")

    if not isinstance(data, dict):
        raise bad("(top level)", f"expected a JSON object, got {type(data).__name__}")
    run = data.get("run")
    if not isinstance(run, dict):
        raise bad("run", "missing or not an object")
    for name in RUN_FIELDS:
        if not isinstance(run.get(name), str) or not run[name].strip():
            raise bad(f"run.{name}", "missing or not text")
    if run["language"] not in LANGUAGES:
        raise bad("run.language", f"{run['language']!r} is not one of {', '.join(LANGUAGES)}")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        raise bad("metrics", "missing or not an object")
    figures: dict[str, float] = {}
    for name, block in metrics.items():
        if name not in KNOWN_METRICS:
            raise bad(f"metrics.{name}", f"unknown metric (known: {', '.join(KNOWN_METRICS)})")
        values = block.get("metrics") if isinstance(block, dict) else None
        if not isinstance(values, dict):
            raise bad(f"metrics.{name}.metrics", "missing or not an object")
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(f"metrics.{name}.metrics.{key}", f"expected a number, got {value!r}")
            if key in KNOWN_METRICS[name]:
                figures[KNOWN_METRICS[name][key]] = float(value)
    if not figures:
        raise bad("metrics", "no known figure: run the evaluator (bench_run.py) before storing its summary")
    return Summary(path, {k: run[k] for k in (*RUN_FIELDS, "dataset") if k in run}, figures, data,
                   hashlib.sha256(data_bytes).hexdigest())


@dataclass
class StoreOutcome:
    result: BenchmarkResult
    state: str  # stored, unchanged, replaced


def store_results(session: Session, round_name: str, path: Path, split: str | None = None,
                  replace: bool = False) -> StoreOutcome:
    """Store an evaluator summary with a ViStoryBench round. The same file again changes nothing; another
    summary for the same run (method, mode, language, timestamp) is refused unless `replace`."""
    summary = read_summary(path)
    rnd = get_round(session, round_name)
    source = vistory_source(rnd)
    split = split or source["split"]
    if split not in SPLITS:
        raise RoundError(f"--split {split!r}: must be one of {', '.join(SPLITS)}")
    if summary.run["language"] != source["language"]:
        raise RoundError(f"{path}: run.language is {summary.run['language']!r} but round {round_name!r} was "
                         f"imported in {source['language']!r}: not this round's images")
    key = {"round_id": rnd.id, "benchmark": BENCHMARK, "method": summary.run["method"], "mode": summary.run["mode"],
           "language": summary.run["language"], "evaluated_at": summary.run["timestamp"]}
    row = session.scalar(select(BenchmarkResult).filter_by(**key))
    columns = {"split": split, "figures": summary.figures, "summary": summary.raw, "summary_sha256": summary.sha256,
               "source_path": str(Path(path).resolve())}
    if row is not None:
        if row.summary_sha256 == summary.sha256 and row.split == split:
            return StoreOutcome(row, "unchanged")
        if not replace:
            raise RoundError(f"round {round_name!r} already has another summary for {_run_label(row)}: pass "
                             "--replace to keep this one instead")
        for k, v in columns.items():
            setattr(row, k, v)
        session.flush()
        return StoreOutcome(row, "replaced")
    row = BenchmarkResult(**key, **columns)
    session.add(row)
    session.flush()
    return StoreOutcome(row, "stored")


def _run_label(row: BenchmarkResult) -> str:
    return f"{row.method}/{row.mode}/{row.language} at {row.evaluated_at}"


def paper_scale(figures: dict[str, float]) -> dict[str, float | None]:
    """The paper's Table 1 columns (and aesthetics, copy-paste as the evaluator writes them); None if not run."""
    def scaled(name: str) -> float | None:
        return None if name not in figures else 100 * figures[name]

    parts = [figures[p] for p in ALIGNMENT_PARTS if p in figures]
    return {"CSD cross": scaled("csd_cross"), "CSD self": scaled("csd_self"),
            "CIDS cross": scaled("cids_cross"), "CIDS self": scaled("cids_self"), "OCCM": figures.get("occm"),
            "alignment": 100 * sum(parts) / (4 * len(parts)) if len(parts) == len(ALIGNMENT_PARTS) else None,
            "aesthetics": figures.get("aesthetics"), "copy-paste": figures.get("copy_paste")}


@dataclass(frozen=True)
class ResultRow:
    """One stored summary, for tables that put rounds side by side."""

    round: str
    method: str
    mode: str
    language: str
    split: str
    evaluated_at: str
    figures: dict[str, float]

    @property
    def paper(self) -> dict[str, float | None]:
        return paper_scale(self.figures)


def result_rows(session: Session, rounds: list[str] | None = None) -> list[ResultRow]:
    """Every stored benchmark result (of `rounds`, in that order, when given), oldest round first."""
    query = select(BenchmarkResult, Round.name).join(Round, Round.id == BenchmarkResult.round_id)
    if rounds is not None:
        query = query.where(Round.name.in_(rounds))
    rows = [ResultRow(name, r.method, r.mode, r.language, r.split, r.evaluated_at, dict(r.figures))
            for r, name in session.execute(query.order_by(Round.id, BenchmarkResult.evaluated_at,
                                                          BenchmarkResult.id)).all()]
    if rounds is not None:
        order = {name: i for i, name in enumerate(rounds)}
        rows.sort(key=lambda r: order[r.round])
    return rows
