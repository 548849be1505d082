"""`storyloop toy`: train the toy world's models again (their weights are committed; this is how)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from storyloop.cli.common import console, fail

app = typer.Typer(no_args_is_help=True, help="The toy story world: retrain its base model, Stage-1 LoRA, readers.")


@app.command("train-base")
def train_base_cmd(
    out: Annotated[Path | None, typer.Option(help="Pipeline folder to write; default: the committed one.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (batch 32); default: the committed "
                                                   "weights' recipe (their training.json).")] = None,
    seed: Annotated[int | None, typer.Option(help="Default: the committed weights' seed.")] = None,
    mixed_precision: Annotated[str | None, typer.Option(help="bf16 (autocast; the default) or no.")] = None,
) -> None:
    """Train the toy FLUX transformer text-to-image on single frames (~14 min on 2 CPU cores)."""
    from storyloop.toy.assets import BASE
    from storyloop.toy.train_base import BaseTrainConfig, train_base

    given = {k: v for k, v in dict(steps=steps, seed=seed, mixed_precision=mixed_precision).items() if v is not None}
    try:
        config = BaseTrainConfig(**given)  # BaseTrainConfig holds the defaults, so they live in one place
    except ValueError as e:  # the config names the key at fault
        raise fail(str(e), code=2) from e
    folder = train_base(out or BASE, config)
    console.print(f"Toy base model saved to {folder}")


@app.command("train-stage1")
def train_stage1_cmd(
    out: Annotated[Path | None, typer.Option(help="LoRA folder to write; default: the committed one.")] = None,
    base: Annotated[Path | None, typer.Option(help="Toy base pipeline folder; default: the committed one.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (8 groups of 1 target + 2 references); "
                                                   "default: the committed LoRA's recipe (its training.json).")] = None,
) -> None:
    """Train the toy Stage-1 GSA LoRA on rendered story groups with the real Stage-1 trainer."""
    from storyloop.toy.assets import BASE, STAGE1
    from storyloop.toy.train_stage1 import train_toy_stage1

    overrides = {} if steps is None else {"max_train_steps": steps}  # else STAGE1_DEFAULTS
    folder = train_toy_stage1(base or BASE, out or STAGE1, **overrides)
    console.print(f"Toy Stage-1 LoRA saved to {folder}")


@app.command("train-readers")
def train_readers_cmd(
    out: Annotated[Path | None, typer.Option(help="Folder to write; default: the committed one.")] = None,
) -> None:
    """Train the attribute readers (the metrics' instrument) and report their accuracy on rendered frames."""
    from storyloop.toy.assets import READERS
    from storyloop.toy.readers import train_readers

    accuracy = train_readers(out or READERS)
    console.print("Reader accuracy on held-out rendered frames: " +
                  ", ".join(f"{k} {100 * v:.1f} %" for k, v in accuracy.items()))
