"""Training the toy Stage-1 GSA LoRA: render story groups, then the real `train_stage1`."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from storyloop.generation.config import Stage1Config
from storyloop.generation.stage1 import train_stage1
from storyloop.toy.data import stage1_stories, write_story_dataset
from storyloop.toy.model import IMAGE_SIZE, MAX_SEQUENCE_LENGTH
from storyloop.toy.world import split_characters

STAGE1_DEFAULTS = dict(rank=16, lora_alpha=16, learning_rate=5e-4, max_train_steps=2200, train_batch_size=8,
                       num_references=2, resolution=IMAGE_SIZE, caption_dropout=0.1,
                       max_sequence_length=MAX_SEQUENCE_LENGTH, gradient_checkpointing=False,
                       checkpointing_steps=500, report_to="none", mixed_precision="bf16", seed=0)


def train_toy_stage1(base: Path, out: Path, stories: int = 600, progress: bool = True, **overrides) -> Path:
    start = time.perf_counter()
    train_chars, _ = split_characters()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_story_dataset(stage1_stories(train_chars, stories, seed=1), Path(tmp) / "stories", seed=1)
        cfg = Stage1Config(**{**STAGE1_DEFAULTS, **overrides, "model": str(base), "dataset": str(dataset),
                              "output_dir": str(Path(tmp) / "run")})
        lora = train_stage1(cfg, progress=progress)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(lora, out)
    (out / "training.json").write_text(json.dumps({"stories": stories, "seconds": time.perf_counter() - start,
                                                   "command": "storyloop toy train-stage1",
                                                   "config": {**STAGE1_DEFAULTS, **overrides}}, indent=2))
    return out
