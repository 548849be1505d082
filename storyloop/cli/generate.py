"""`storyloop generate`: Stage-1 training and candidate generation."""

from __future__ import annotations

from typing import Annotated

import typer

from storyloop.cli.common import DataDirOpt, DbOpt, console, fail, ready_settings, user_errors

app = typer.Typer(no_args_is_help=True, help="Stage-1 GSA training and candidate generation for a round.")

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise fail(f"--dtype must be one of {', '.join(DTYPES)}")
    return getattr(torch, name)


@app.command("run")
def run(
    round_name: Annotated[str, typer.Option("--round", help="The round whose scenarios get candidates.")],
    model: Annotated[str | None, typer.Option(help="FLUX folder or hub id; default: the round's base model.")] = None,
    num_candidates: Annotated[int, typer.Option("-k", "--num-candidates", min=1, help="Images per scenario.")] = 4,
    steps: Annotated[int, typer.Option(min=1, help="Denoising steps (Euler, flow matching).")] = 50,
    guidance: Annotated[float, typer.Option(help="Distilled guidance scale (FLUX.1-dev).")] = 3.5,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 1024,
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 1024,
    seed: Annotated[int, typer.Option(help="Base seed; each candidate derives its own.")] = 0,
    max_sequence_length: Annotated[int, typer.Option(help="T5 prompt tokens.")] = 512,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute reference K/V at every step.")] = False,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Generate K candidates per scenario of a round (resumable: existing candidates are kept)."""
    from storyloop.generation.models import ModelError
    from storyloop.generation.run import GenerateConfig, generate_round

    s = ready_settings(data_dir, db)
    config = GenerateConfig(num_candidates, steps, guidance, height, width, seed, max_sequence_length, not no_cache)
    with user_errors():
        try:
            summary = generate_round(s, round_name, config, model, dtype=torch_dtype(dtype))
        except ModelError as exc:
            raise fail(str(exc)) from None
    console.print(f"Round {round_name!r}: {summary.generated} candidate(s) generated, {summary.skipped} already "
                  f"there, over {summary.scenarios} scenario(s) in {summary.seconds:.1f}s "
                  f"(model {summary.model_fingerprint[:12]}).")
