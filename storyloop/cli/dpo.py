"""`storyloop dpo`: train the Diffusion-DPO refinement LoRA and inspect runs."""

from __future__ import annotations

import signal
from typing import Annotated

import typer
from rich.table import Table

from storyloop.cli.common import (DataDirOpt, DbOpt, console, fail, main_process, parse_overrides, ready_settings,
                                  user_errors)
from storyloop.db import session_scope

app = typer.Typer(no_args_is_help=True, help="Train the Diffusion-DPO refinement LoRA.")


def _epilog() -> str:
    from storyloop.dpo.config import DPOConfig

    return "Config keys (YAML or --set KEY=VALUE):\n\n" + "\n\n".join(DPOConfig.describe().splitlines())


@app.command("train", epilog=_epilog())
def train(
    round_name: Annotated[str | None, typer.Option("--round", help="The judged round.")] = None,
    config: Annotated[str | None, typer.Option("--config", help="YAML file of config keys.")] = None,
    model: Annotated[str | None, typer.Option(help="FLUX folder or hub id; default: the round's.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="LoRA, checkpoints, cache and logs go here.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: KEY=VALUE.")] = None,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Train a zero-initialised DPO LoRA on the round's preference pairs (Stage-1 LoRA frozen)."""
    from storyloop.dpo.config import DPOConfig
    from storyloop.dpo.trainer import DPOError, train_dpo
    from storyloop.generation.encoding_cache import CacheError
    from storyloop.generation.models import ModelError
    from storyloop.generation.training import Terminated

    s = ready_settings(data_dir, db)
    overrides = {"round": round_name, "model": model, "output_dir": output_dir, "max_steps": max_steps}
    overrides.update(parse_overrides(set_))
    try:
        cfg = DPOConfig.from_sources(config, **overrides)
    except ValueError as exc:  # a bad key or value, named by the config
        raise fail(str(exc)) from None
    if not cfg.round:
        raise fail("--round is required (or set it in --config)")
    # A mistake the user can fix is one line; anything else from torch, diffusers or peft keeps its traceback.
    with user_errors():
        try:
            lora = train_dpo(cfg, s, resume=resume)
        except (DPOError, ModelError, CacheError) as exc:
            raise fail(str(exc)) from None
        except Terminated:
            if not main_process():  # the first process says it, once
                raise typer.Exit(128 + signal.SIGTERM) from None
            raise fail("stopped by SIGTERM; the run, if it had started, is marked failed: the same command with "
                       "--resume continues it from its last checkpoint", code=128 + signal.SIGTERM) from None
    if main_process():
        console.print(f"DPO LoRA saved to {lora}\nNext round: storyloop round create NAME --parent {cfg.round} "
                      f"--dpo-lora {lora} --scenarios FILE")


@app.command("runs")
def runs(data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """List DPO runs: status, steps logged, last metrics, artifact."""
    from sqlalchemy import select

    from storyloop.db.models import DpoRun, Round

    s = ready_settings(data_dir, db)
    table = Table("run", "round", "status", "steps", "loss", "acc", "margin", "artifact / reason")
    with session_scope(s.db_url) as session:
        for run in session.scalars(select(DpoRun).order_by(DpoRun.id)):
            last = run.metrics[-1].values if run.metrics else {}
            fmt = (lambda k: f"{last[k]:.4f}" if k in last else "-")
            table.add_row(str(run.id), session.get(Round, run.round_id).name, run.status.value,
                          str(len(run.metrics)), fmt("loss"), fmt("rewards/accuracies"), fmt("rewards/margins"),
                          run.artifact_path or run.failure_reason or "")
    console.print(table)
