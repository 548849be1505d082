"""Training the toy Stage-1 GSA LoRA: render story groups, then the real `train_stage1`.

Besides the story groups, one group per two-character frame holds that frame, another frame of the
story and the companion drawn alone (data.write_story_dataset's pair groups), so Stage-1 learns to
take each character from its own reference, as two-character scenarios give them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from storyloop.generation.config import Stage1Config
from storyloop.generation.models import LoraMeta
from storyloop.generation.stage1 import train_stage1
from storyloop.toy.data import stage1_stories, write_story_dataset
from storyloop.toy.model import IMAGE_SIZE, MAX_SEQUENCE_LENGTH
from storyloop.toy.world import split_characters

STAGE1_DEFAULTS = dict(rank=16, lora_alpha=16, learning_rate=5e-4, max_train_steps=2200, train_batch_size=8,
                       num_references=2, resolution=IMAGE_SIZE, caption_dropout=0.1,
                       max_sequence_length=MAX_SEQUENCE_LENGTH, gradient_checkpointing=False,
                       checkpointing_steps=500, report_to="none", mixed_precision="bf16", seed=0)


def train_toy_stage1(base: Path, out: Path, stories: int = 600, progress: bool = True, pair_groups: bool = True,
                     init: Path | None = None, **overrides) -> Path:
    """Train (or, from `init`, fine-tune) the toy Stage-1 LoRA into `out`; `overrides` are Stage1Config knobs.

    training.json records the recipe, wall and CPU seconds, and the recipe `init` was made by (its own
    training.json), so a fine-tuned LoRA says everything that made it."""
    start, cpu = time.perf_counter(), time.process_time()
    Stage1Config(**{**STAGE1_DEFAULTS, **overrides})  # a bad knob is refused before anything is rendered
    if init is not None:
        LoraMeta.read(init)  # refused unless a storyloop LoRA folder
    train_chars, _ = split_characters()
    earlier = None
    with tempfile.TemporaryDirectory() as tmp:
        if init is not None:  # a copy: `init` may be `out`, which is replaced below
            shutil.copytree(init, Path(tmp) / "init")
            record = Path(init) / "training.json"
            earlier = json.loads(record.read_text()) if record.exists() else None
            overrides = {**overrides, "init_lora": str(Path(tmp) / "init")}
        dataset = write_story_dataset(stage1_stories(train_chars, stories, seed=1), Path(tmp) / "stories", seed=1,
                                      pair_groups=pair_groups)
        cfg = Stage1Config(**{**STAGE1_DEFAULTS, **overrides, "model": str(base), "dataset": str(dataset),
                              "output_dir": str(Path(tmp) / "run")})
        lora = train_stage1(cfg, progress=progress)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(lora, out)
    recipe = {k: v for k, v in {**STAGE1_DEFAULTS, **overrides}.items() if k != "init_lora"}
    (out / "training.json").write_text(json.dumps({
        "stories": stories, "pair_groups": pair_groups, "torch_threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
        "command": "storyloop toy train-stage1", "config": recipe,
        **({"init": str(init), "init_training": earlier} if init is not None else {})}, indent=2))
    return out
