"""What a pipeline run did: items left after every stage, and every input it skipped and why."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from rich.table import Table


@dataclass
class Skipped:
    file: str
    stage: str
    reason: str


@dataclass
class Report:
    """`counts` keeps stage order: stage name -> items left after it (the paper's funnel)."""

    pipeline: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def count(self, stage: str, left: int, seconds: float | None = None) -> None:
        self.counts[stage] = int(left)
        if seconds is not None:
            self.seconds[stage] = round(seconds, 3)

    def skip(self, file: str, stage: str, reason: str) -> None:
        self.skipped.append(Skipped(str(file), stage, reason))

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline, "counts": dict(self.counts), "skipped_files": len(self.skipped),
                "skipped": [asdict(s) for s in self.skipped], "seconds": dict(self.seconds), "config": self.config}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def table(self, units: dict[str, str] | None = None) -> Table:
        """The funnel for the terminal: one row per stage with what is left and what it removed."""
        units = units or {}
        table = Table(title=f"data {self.pipeline}", title_justify="left")
        for name, justify in (("stage", "left"), ("left", "right"), ("removed", "right"), ("unit", "left"),
                              ("seconds", "right")):
            table.add_column(name, justify=justify)
        before, before_unit = None, None
        for stage, left in self.counts.items():
            unit = units.get(stage, "")
            # items of another unit (pages after books, books after frames) were not removed: leave it blank
            removed = str(before - left) if before is not None and unit == before_unit and before >= left else ""
            secs = self.seconds.get(stage)
            table.add_row(stage, str(left), removed, unit, "" if secs is None else f"{secs:.1f}")
            before, before_unit = left, unit
        if self.skipped:
            table.caption = f"{len(self.skipped)} input(s) skipped as unreadable: see report.json 'skipped'"
        return table
