"""`storyloop vistory`: ViStoryBench in (a round per split), out (the evaluator's folders), and its verdict back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from storyloop.cli.common import (
    BaseModelOpt,
    DataDirOpt,
    DbOpt,
    DpoLoraOpt,
    KOpt,
    Stage1LoraOpt,
    console,
    ready_settings,
    user_errors,
)
from storyloop.db import read_scope, session_scope

app = typer.Typer(no_args_is_help=True, help="ViStoryBench: import its stories as a round, export the round's "
                                             "images for the official evaluator, store the evaluator's summary.")


@app.command("import")
def import_cmd(
    dataset_dir: Annotated[Path, typer.Argument(help="The dataset: the folder holding ViStory/, or ViStory/ itself.")],
    round_name: Annotated[str, typer.Option("--round", help="The round to create (or extend with more stories).")],
    split: Annotated[str, typer.Option(help="full (every story) or lite (the 20 Lite stories).")] = "full",
    lang: Annotated[str, typer.Option("--lang", help="en or ch: the text the prompts are built from.")] = "en",
    stories: Annotated[str | None, typer.Option(help="Only these stories of the split, e.g. 01,08.")] = None,
    refs_per_character: Annotated[int | None, typer.Option(
        min=1, help="At most N reference images per character (the first by file name); default: all.")] = None,
    base_model: BaseModelOpt = None, stage1_lora: Stage1LoraOpt = None, dpo_lora: DpoLoraOpt = None,
    judgments_per_scenario: KOpt = 3,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """A round with one scenario per shot: story NN, frame = the shot's index, the benchmark baselines' prompt
    (camera;plot;script;NAME is PROMPT;...;scene;), the images of the shot's characters as references.
    Everything is checked before anything is written."""
    from storyloop.db.rounds import ModelSpec
    from storyloop.vistory.importing import ImportOptions, import_dataset

    s = ready_settings(data_dir, db)
    chosen = tuple(x.strip() for x in stories.split(",") if x.strip()) if stories else None
    with user_errors(), session_scope(s.db_url) as session:
        out = import_dataset(session, s.store_dir, dataset_dir, round_name,
                             ImportOptions(split, lang, chosen, refs_per_character),
                             ModelSpec(base_model, stage1_lora, dpo_lora), judgments_per_scenario)
    r = out.rounds
    verb = "Created" if r.round_created else ("Updated" if r.scenarios_added else "Unchanged:")
    console.print(f"{verb} round {round_name!r} from ViStoryBench ({out.split}, {lang}): {len(out.stories)} of the "
                  f"split's {out.split_size} story(ies) here, {out.frames} shot(s); {r.scenarios_added} scenario(s) "
                  f"added ({r.scenarios_unchanged} already there), {r.references} reference(s), {r.new_assets} new "
                  f"image(s) in the store. Next: storyloop generate run --round {round_name}")


@app.command("export")
def export_cmd(
    round_name: Annotated[str, typer.Option("--round", help="A round imported with `vistory import`.")],
    method: Annotated[str, typer.Option(help="The method's folder name, e.g. storyloop-r2.")],
    out: Annotated[Path, typer.Option("--out", help="The evaluator's outputs folder (its --outputs_path).")],
    mode: Annotated[str, typer.Option(help="The mode's folder name.")] = "base",
    lang: Annotated[str | None, typer.Option("--lang", help="en or ch; default: the round's language.")] = None,
    timestamp: Annotated[str | None, typer.Option(help="YYYYMMDD_HHMMSS; default: now.")] = None,
    pick: Annotated[str, typer.Option(help="winner (people's choice; unjudged shots: the first candidate), first, "
                                           "or a candidate index.")] = "winner",
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Write OUT/<method>/<mode>/<lang>/<timestamp>/<NN>/shots/shot_XX.png, one image per shot."""
    from storyloop.vistory.export import ExportOptions, export_round, parse_pick

    s = ready_settings(data_dir, db)
    with user_errors(), read_scope(s.db_url) as session:
        summary = export_round(session, s.store_dir, round_name, out,
                               ExportOptions(method, mode, lang, timestamp, parse_pick(pick)))
    how = ", ".join(f"{n} {k}" for k, n in sorted(summary.picked.items()))
    console.print(f"Exported {summary.shots} shot(s) of {summary.stories} story(ies) to {summary.folder} ({how}).")
    console.print(f"Evaluate (at ViStoryBench/vistorybench 514cc31): python bench_run.py --outputs_path {out} "
                  f"--method {method} --mode {mode} --language {summary.folder.parent.name} --split {summary.split} "
                  f"--timestamp {summary.folder.name}")


@app.command("results")
def results_cmd(
    summary_json: Annotated[Path, typer.Argument(help="The evaluator's summary.json "
                                                      "(<results>/<method>/<mode>/<lang>/<timestamp>/summary.json).")],
    round_name: Annotated[str, typer.Option("--round", help="The round whose images were evaluated.")],
    split: Annotated[str | None, typer.Option(help="The evaluator's --split (full or lite); default: the "
                                                   "round's.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Keep this summary instead of another one already "
                                                            "stored for the same run.")] = False,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Store the official evaluator's summary with the round; `round show` and the Rounds page show it."""
    from storyloop.vistory.results import result_rows, store_results

    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        outcome = store_results(session, round_name, summary_json, split, replace)
        r = outcome.result
        label = f"{r.method}/{r.mode}/{r.language} ({r.split}) evaluated {r.evaluated_at}"
        rows = result_rows(session, [round_name])
    verb = {"stored": "Stored", "unchanged": "Already stored:", "replaced": "Replaced"}[outcome.state]
    console.print(f"{verb} {label} with round {round_name!r}.")
    console.print(results_table(rows))


def results_table(rows) -> Table:
    """Stored results side by side, on the paper's scale (CSD, CIDS × 100; alignment: mean of scene, camera and
    character action ÷ 4 × 100)."""
    from storyloop.vistory.results import PAPER_COLUMNS

    title = "ViStoryBench (paper scale: CSD, CIDS × 100; alignment = mean(scene, camera, action) / 4 × 100)"
    table = Table("round", "method/mode", "lang", "split", "evaluated", *PAPER_COLUMNS, title=title)
    for r in rows:
        paper = r.paper
        table.add_row(r.round, f"{r.method}/{r.mode}", r.language, r.split, r.evaluated_at,
                      *("-" if paper[c] is None else f"{paper[c]:.1f}" if c not in ("aesthetics", "copy-paste")
                        else f"{paper[c]:.3f}" for c in PAPER_COLUMNS))
    return table
