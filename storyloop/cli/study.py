"""`storyloop study`: blind studies of arms against arms (issue #20)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from storyloop.cli.common import DataDirOpt, DbOpt, console, fail, main_process, ready_settings, user_errors
from storyloop.db import session_scope
from storyloop.db.models import SkipPolicy, StudyKind
from storyloop.studies.arms import SPEC_HELP

app = typer.Typer(no_args_is_help=True, help="Blind studies: did the round help? Arms (models or folders of "
                                             "images) compared pairwise or rated 1-5, arms hidden from annotators.")


ARM_EPILOG = ("Arms (--arm NAME=SPEC, at least two for pairwise):\n\n"
              "uno=outputs/uno/  a folder of images made elsewhere: <scenario id>.png, or <scenario id>_<seed>.png "
              "with --seeds; re-encoded as bare PNGs\n\n"
              "dpo=base=/models/FLUX.1-dev,stage1=s1/lora,dpo=dpo-r1/lora,ref_scale=1  a model: base (folder or "
              "hub id), optional Stage-1 and DPO LoRAs, reference-guidance scale (1 = the paper's sampler)\n\n"
              "dpo=arms/dpo.yaml  the same keys (base, stage1, dpo, ref_scale) in a YAML file")


@app.command("create", epilog=ARM_EPILOG)
def create(
    name: str,
    arm: Annotated[list[str], typer.Option("--arm", metavar="NAME=SPEC", help=SPEC_HELP)],
    round_name: Annotated[str | None, typer.Option("--round", help="Use this round's scenarios.")] = None,
    scenarios: Annotated[Path | None, typer.Option(
        help="Or a scenarios JSONL (as `round create`); stored as round study-NAME.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Images per arm and scenario; seed i is the same in every "
                                                   "model arm.")] = 1,
    kind: Annotated[StudyKind, typer.Option(help="pairwise (left/right/tie/both bad) or likert (CC, SC, SA "
                                                 "1-5 of one arm's story).")] = StudyKind.pairwise,
    answers_per_item: Annotated[int, typer.Option("-k", "--answers-per-item", min=1,
                                                  help="Answers each item needs.")] = 3,
    gold_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of gold items per annotator.")] = 0.0,
    skip_policy: Annotated[SkipPolicy, typer.Option(help="others, everyone_last or counts (as rounds).")]
    = SkipPolicy.others,
    seed: Annotated[int, typer.Option(help="Base seed of the study's images.")] = 0,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Create a study: its arms, scenarios and items, all or nothing."""
    from storyloop.studies.arms import parse_arms
    from storyloop.studies.create import StudyOptions, create_study

    s = ready_settings(data_dir, db)
    with user_errors():
        arms = parse_arms(arm)
        with session_scope(s.db_url) as session:
            summary = create_study(session, s.store_dir, name, arms, round_name=round_name, scenarios_file=scenarios,
                                   options=StudyOptions(kind, seeds, answers_per_item, gold_rate, skip_policy, seed))
    console.print(f"Created {summary.kind.value} study {name!r} on round {summary.round!r}: {len(summary.arms)} arms "
                  f"({', '.join(summary.arms)}), {summary.scenarios} scenario(s), {summary.items} item(s); "
                  f"{summary.folder_images} folder image(s) stored. Next: storyloop study generate {name}")


@app.command("generate")
def generate(
    name: str,
    steps: Annotated[int, typer.Option(min=1, help="Denoising steps (Euler, flow matching).")] = 50,
    guidance: Annotated[float, typer.Option(help="Distilled guidance scale (FLUX.1-dev).")] = 3.5,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 1024,
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 1024,
    max_sequence_length: Annotated[int, typer.Option(help="T5 prompt tokens.")] = 512,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute reference K/V at every step.")] = False,
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16.")] = "auto",
    memory: Annotated[str, typer.Option(help="Memory mode: full, 80gb or 24gb.")] = "80gb",
    quantization: Annotated[str, typer.Option(help="auto, none, nf4, int8 or fp8.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Seeds of a scenario denoised together.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON object on the last line.")] = False,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Generate every model arm's images (resumable; several processes under accelerate/torchrun split the
    scenarios, like `generate run`)."""
    from storyloop.cli.generate import torch_dtype
    from storyloop.generation.models import ModelError
    from storyloop.generation.run import GenerateConfig
    from storyloop.studies.generate import generate_study

    weight_dtype = torch_dtype(dtype)
    s = ready_settings(data_dir, db)
    with user_errors():
        try:
            config = GenerateConfig(1, steps, guidance, height, width, 0, max_sequence_length, not no_cache,
                                    batch_size, (1.0,), memory, quantization)
            summary = generate_study(s, name, config, dtype=weight_dtype)
        except ModelError as exc:
            raise fail(str(exc)) from None
    if main_process():
        if as_json:
            print(json.dumps(summary.as_json()))
            return
        console.print(f"Study {name!r}: {summary.generated} image(s) generated, {summary.skipped} already there, "
                      f"over {summary.scenarios} scenario(s) in {summary.seconds:.1f}s.")


@app.command("results")
def results(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON object: arms, win_rate, ci95, "
                                                         "bt_scores, position_bias, likert, answers.")] = False,
    n_boot: Annotated[int, typer.Option(min=10, help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Win rates with 95% intervals, Bradley-Terry scores, position bias, Likert means, agreement."""
    from storyloop.studies.results import study_results

    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        res = study_results(session, name, n_boot=n_boot, seed=seed)
    if as_json:
        print(json.dumps(res))
        return
    console.print(f"[bold]{name}[/] ({res['kind']}): {res['answers']} answer(s), {res['skipped']} skip(s), "
                  f"{res['items']} item(s)")
    if res["win_rate"]:
        table = Table("pair", "win rate", "95% CI", "n", "wins", "losses", "ties", "both bad")
        for pair, r in res["win_rate"].items():
            table.add_row(pair, f"{r['win_rate']:.3f}", f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]", str(r["n"]),
                          str(r["wins"]), str(r["losses"]), str(r["ties"]), str(r["both_bad"]))
        console.print(table)
        bt = Table("arm", "Bradley-Terry", "95% CI")
        for arm_name, r in res["bt_scores"].items():
            bt.add_row(arm_name, f"{r['score']:.3f}", f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
        console.print(bt)
        pb = res["position_bias"]
        console.print(f"left chosen {pb['left_share']:.3f} of decided answers (n = {pb['n']})"
                      + (" [bold red]position bias[/]" if pb["flagged"] else ""))
    for arm_name, by_criterion in res["likert"].items():
        console.print(f"{arm_name}: " + ", ".join(f"{c} {v['mean']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]"
                                                  for c, v in by_criterion.items()))


@app.command("export")
def export(
    name: str,
    out: Annotated[Path, typer.Option("--out", help="FILE.csv or FILE.parquet.")],
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Every answer (every revision, skips included) with the arms revealed."""
    from storyloop.studies.export import export_study

    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        summary = export_study(session, name, out)
    console.print(f"Exported {summary.rows} row(s) ({summary.answers} latest answer(s)) of study {name!r} to "
                  f"{summary.path}.")


@app.command("list")
def list_(data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """List studies with their progress."""
    from storyloop.studies.overview import study_overviews

    s = ready_settings(data_dir, db)
    table = Table("study", "kind", "round", "arms", "images", "items", "answers", "k")
    with session_scope(s.db_url) as session:
        for o in study_overviews(session):
            table.add_row(o.study.name, o.study.kind.value, o.round_name, ", ".join(a.name for a in o.arms),
                          f"{sum(a.images for a in o.arms)}/{sum(a.images_needed for a in o.arms)}", str(o.items),
                          str(o.answers), str(o.study.answers_per_item))
    console.print(table)


@app.command("show")
def show(name: str, data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Show a study's arms (revealed: this is for researchers) and how far it is."""
    from storyloop.studies.overview import study_overviews

    s = ready_settings(data_dir, db)
    with session_scope(s.db_url) as session:
        found = study_overviews(session, name)
        if not found:
            raise fail(f"no study named {name!r}")
        o = found[0]
        console.print(f"[bold]{name}[/] {o.study.kind.value} on round {o.round_name!r}: seeds {o.study.seeds}, "
                      f"k = {o.study.answers_per_item}, gold rate {o.study.gold_rate:g}; {o.items} item(s), "
                      f"{o.answers} answer(s)")
        table = Table("arm", "kind", "images", "spec")
        for a in o.arms:
            table.add_row(a.name, a.kind.value, f"{a.images}/{a.images_needed}", a.spec)
        console.print(table)


@app.command("gold")
def gold(
    name: str,
    item: Annotated[str | None, typer.Argument(help="The item's key (as listed without one).")] = None,
    prefer: Annotated[str | None, typer.Option(help="Pairwise: the arm that should win.")] = None,
    tie: Annotated[bool, typer.Option("--tie", help="Pairwise: neither should win.")] = False,
    both_bad: Annotated[bool, typer.Option("--both-bad", help="Pairwise: both frames are bad.")] = False,
    scores: Annotated[str | None, typer.Option(help="Likert: character consistency, style consistency and "
                                                    "aesthetics, e.g. 4,5,3.")] = None,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Set an item's gold answer (served first, then at the study's --gold-rate, and scored per annotator on
    Results); without ITEM, list the items and their gold answers."""
    from sqlalchemy import select

    from storyloop.db.models import Study, StudyArm, StudyGoldAnswer, StudyItem
    from storyloop.studies.errors import StudyError
    from storyloop.studies.gold import set_study_gold
    from storyloop.studies.queue import LikertScores

    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        study = session.scalar(select(Study).where(Study.name == name))
        if study is None:
            raise fail(f"no study named {name!r}")
        arms = {a.name: a.id for a in session.scalars(select(StudyArm).where(StudyArm.study_id == study.id))}
        if item is None:
            names = {v: k for k, v in arms.items()}
            golds = {g.item_id: g for g in session.scalars(select(StudyGoldAnswer).join(StudyItem)
                                                           .where(StudyItem.study_id == study.id))}
            table = Table("item", "arms", "gold")
            for it in session.scalars(select(StudyItem).where(StudyItem.study_id == study.id)
                                      .order_by(StudyItem.key)):
                g = golds.get(it.id)
                answer = ("" if g is None else names[g.preferred_arm_id] if g.preferred_arm_id else
                          g.verdict.value if g.verdict else f"{g.cc},{g.sc},{g.sa}")
                table.add_row(it.key, " vs ".join(names[a] for a in (it.arm_a_id, it.arm_b_id) if a), answer)
            console.print(table)
            return
        row = session.scalar(select(StudyItem).where(StudyItem.study_id == study.id, StudyItem.key == item))
        if row is None:
            raise fail(f"study {name!r} has no item {item!r} (run `storyloop study gold {name}` to list them)")
        given = [x for x in (prefer, tie or None, both_bad or None, scores) if x]
        if len(given) != 1:
            raise fail("give exactly one of --prefer ARM, --tie, --both-bad or --scores CC,SC,SA")
        try:
            if prefer is not None:
                if prefer not in arms:
                    raise fail(f"no arm {prefer!r} in study {name!r} (arms: {', '.join(arms)})")
                set_study_gold(session, row.id, preferred_arm_id=arms[prefer])
            elif scores is not None:
                try:
                    cc, sc, sa = (int(v) for v in scores.split(","))
                except ValueError:
                    raise fail(f"--scores takes three whole numbers, e.g. 4,5,3 (got {scores!r})") from None
                set_study_gold(session, row.id, scores=LikertScores(cc, sc, sa))
            else:
                set_study_gold(session, row.id, verdict="tie" if tie else "both_bad")
        except StudyError as exc:
            raise fail(str(exc)) from None
    console.print(f"Gold answer set for {item!r} of study {name!r}.")
