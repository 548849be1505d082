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
    init: Annotated[Path | None, typer.Option("--from", help="A toy Stage-1 LoRA folder to fine-tune instead of "
                                                             "starting a new one.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Default: 5e-4.")] = None,
    mixed_precision: Annotated[str | None, typer.Option(help="bf16 (the default; fast only on CPUs with AVX-512 "
                                                             "BF16) or no.")] = None,
    pair_groups: Annotated[bool, typer.Option(help="Also train on a group per two-character frame: the frame, "
                                                   "a protagonist frame, the companion alone.")] = True,
) -> None:
    """Train the toy Stage-1 GSA LoRA on rendered story groups with the real Stage-1 trainer."""
    from storyloop.generation.models import ModelError
    from storyloop.toy.assets import BASE, STAGE1
    from storyloop.toy.train_stage1 import train_toy_stage1

    given = dict(max_train_steps=steps, learning_rate=learning_rate, mixed_precision=mixed_precision)
    overrides = {k: v for k, v in given.items() if v is not None}  # else STAGE1_DEFAULTS
    try:
        folder = train_toy_stage1(base or BASE, out or STAGE1, pair_groups=pair_groups, init=init, **overrides)
    except ValueError as e:  # a knob out of range: Stage1Config names it
        raise fail(str(e), code=2) from e
    except ModelError as e:  # --from is not a Stage-1 LoRA for this base
        raise fail(str(e)) from e
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
