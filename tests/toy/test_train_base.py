"""Toy base training: a few real steps in each precision give a loadable pipeline; bad knobs are refused."""

import json

import pytest
import torch
from typer.testing import CliRunner

from storyloop.cli.main import app
from storyloop.generation.models import load_flux
from storyloop.toy.model import build_toy_pipeline
from storyloop.toy.train_base import BaseTrainConfig, train_base


@pytest.mark.parametrize("precision", ["bf16", "no"])
def test_a_short_run_saves_a_pipeline_that_loads_and_moved(tmp_path, precision):
    config = BaseTrainConfig(steps=3, batch_size=4, frames=16, warmup_steps=1, mixed_precision=precision)
    folder = train_base(tmp_path / "base", config, progress=False)
    record = json.loads((folder / "training.json").read_text())
    assert record["config"]["mixed_precision"] == precision and record["final_loss_ema50"] > 0

    trained = load_flux(str(folder)).transformer
    fresh = build_toy_pipeline(config.seed).transformer
    assert next(trained.parameters()).dtype == torch.float32  # saved as fp16, loaded back as fp32
    moved = [not torch.allclose(a.half().float(), b.float()) for a, b in
             zip(fresh.parameters(), trained.parameters())]
    assert any(moved)


def test_an_unknown_precision_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="mixed_precision"):
        BaseTrainConfig(mixed_precision="fp8")
    result = CliRunner().invoke(app, ["toy", "train-base", "--out", str(tmp_path / "b"), "--mixed-precision", "fp8"])
    assert result.exit_code == 2 and "error: mixed_precision must be one of no, bf16" in result.output
    assert not (tmp_path / "b").exists()
