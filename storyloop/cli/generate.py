"""`storyloop generate`: Stage-1 training and candidate generation."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from storyloop.cli.common import (DataDirOpt, DbOpt, console, fail, main_process, parse_overrides, ready_settings,
                                  user_errors)

app = typer.Typer(no_args_is_help=True, help="Stage-1 GSA training and candidate generation for a round.")

DTYPES = {"float32": "float32", "bfloat16": "bfloat16"}  # float16 is refused: FLUX overflows in it


def torch_dtype(name: str):
    """The torch dtype for --dtype; None for auto (bfloat16 on a GPU, float32 on a CPU)."""
    import torch

    from storyloop.generation.errors import ModelError
    from storyloop.generation.memory import FP16_REASON, check_dtype

    try:
        check_dtype(name)
    except ModelError:
        raise fail(f"--dtype {name} is refused: {FP16_REASON}; use bfloat16 on a GPU (float32 on a CPU)") from None
    if name == "auto":
        return None
    if name not in DTYPES:
        raise fail(f"--dtype must be auto or one of {', '.join(DTYPES)}")
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
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 on a GPU, float32 on a CPU), float32 or bfloat16; "
                                            "float16 overflows in FLUX.")] = "auto",
    memory: Annotated[str, typer.Option(help="Memory mode: full, 80gb (encoders leave the GPU between "
                                             "encodings) or 24gb (also a quantised base, tiled VAE).")] = "80gb",
    quantization: Annotated[str, typer.Option(help="Frozen transformer: auto (the memory mode's), none, nf4, "
                                                   "int8 or fp8.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON object on the last line (counts, "
                                                         "seconds, s_per_image, peak_gb).")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Candidates of a scenario denoised together.")] = 4,
    reference_guidance_scale: Annotated[list[float] | None, typer.Option(
        min=0.0, metavar="SCALE",
        help="Guidance over the GSA references: 1 = off (the paper's sampler); any other value costs 2x. "
             "Repeat it to cycle scales over a scenario's candidates, e.g. 1 and 3: every other one guided.")] = None,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Generate K candidates per scenario of a round (resumable: existing candidates are kept)."""
    from storyloop.generation.models import ModelError
    from storyloop.generation.run import GenerateConfig, generate_round

    weight_dtype = torch_dtype(dtype)  # a refused dtype fails before anything is opened
    s = ready_settings(data_dir, db)
    with user_errors():
        try:
            config = GenerateConfig(num_candidates, steps, guidance, height, width, seed, max_sequence_length,
                                    not no_cache, batch_size, tuple(reference_guidance_scale or (1.0,)), memory,
                                    quantization)
            summary = generate_round(s, round_name, config, model, dtype=weight_dtype)
        except ModelError as exc:
            raise fail(str(exc)) from None
    if main_process():
        if as_json:
            print(json.dumps(summary.as_json()))
            return
        over = f" by {summary.processes} processes" if summary.processes > 1 else ""
        console.print(f"Round {round_name!r}: {summary.generated} candidate(s) generated, {summary.skipped} already "
                      f"there, over {summary.scenarios} scenario(s){over} in {summary.seconds:.1f}s "
                      f"(model {summary.model_fingerprint[:12]}).")


def _stage1_epilog() -> str:
    from storyloop.generation.config import Stage1Config

    return "Config keys (YAML or --set KEY=VALUE):\n\n" + "\n\n".join(Stage1Config.describe().splitlines())


@app.command("train-stage1", epilog=_stage1_epilog())
def train_stage1_cmd(
    model: Annotated[str | None, typer.Option(help="FLUX folder or hub id.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Folder with metadata.jsonl of {group, image, caption}.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="LoRA, checkpoints, cache and logs go here.")] = None,
    config: Annotated[str | None, typer.Option("--config", help="YAML file of config keys.")] = None,
    max_train_steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: KEY=VALUE.")] = None,
) -> None:
    """Train the Stage-1 GSA LoRA on groups of images (target + N clean references)."""
    from storyloop.generation.config import Stage1Config
    from storyloop.generation.encoding_cache import CacheError
    from storyloop.generation.models import ModelError
    from storyloop.generation.stage1 import train_stage1

    overrides = {"model": model, "dataset": dataset, "output_dir": output_dir, "max_train_steps": max_train_steps}
    overrides.update(parse_overrides(set_))
    try:
        cfg = Stage1Config.from_sources(config, **overrides)
    except ValueError as exc:  # a bad key or value, named by the config
        raise fail(str(exc)) from None
    if not cfg.model or not cfg.dataset:
        raise fail("--model and --dataset are required (or set them in --config)")
    # A mistake the user can fix is one line; anything else from torch, diffusers or peft keeps its traceback.
    with user_errors():
        try:
            lora = train_stage1(cfg, resume=resume)
        except (ModelError, CacheError) as exc:
            raise fail(str(exc)) from None
    if main_process():
        console.print(f"Stage-1 LoRA saved to {lora}")
