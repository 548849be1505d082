"""Stage-1 training, `generate run` and `dpo train` as two CPU processes (gloo, DistributedDataParallel).

What must hold with several processes: the run finishes; one LoRA, saved by one process; one DPO run row with
its metrics; generation splits scenarios with no duplicate and no missing candidate; --resume after one process
is killed continues; two processes of batch 1 train exactly as one process of batch 2. Each launch costs a few
seconds of imports per process, so each test checks several of these at once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sqlalchemy import select

from storyloop.db import session_scope, upgrade
from storyloop.db.assets import asset_path
from storyloop.db.models import Candidate, DpoRun, RunStatus
from storyloop.db.rounds import ModelSpec, create_round
from storyloop.dpo.config import DPOConfig
from storyloop.dpo.trainer import train_dpo
from storyloop.generation.config import Stage1Config
from storyloop.generation.run import GenerateConfig, candidate_seed, generate_round
from storyloop.generation.stage1 import train_stage1
from storyloop.settings import Settings
from tests.conftest import make_image, save_tiny_models, write_groups_dataset
from tests.dpo.helpers import judged_for_models
from tests.scale.helpers import launch, launch_and_kill_rank

pytestmark = pytest.mark.slow

WORDS = "a the red blue green fox cat owl reads sleeps 0 1 2 3 4 5".split()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("models"), WORDS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_groups_dataset(tmp_path_factory.mktemp("stage1-data"))


def sqlite_settings(tmp_path) -> Settings:
    """SQLite on purpose: its one writer at a time is where several processes used to collide."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = Settings.resolve(data_dir=tmp_path / "data", db_url=f"sqlite:///{tmp_path / 'storyloop.db'}")
    upgrade(settings.db_url)
    return settings


def db_args(settings: Settings) -> list[str]:
    return ["--data-dir", str(settings.data_dir), "--db", settings.db_url]


def lora_weights(folder):
    return load_file(folder / "pytorch_lora_weights.safetensors")


def assert_same_lora(a: dict, b: dict, mean_tol: float) -> None:
    """Equal up to float rounding: summing a batch's gradients in one process or across two rounds differently,
    and Adam turns that into a full learning-rate step on the odd weight whose gradient is near zero. So the
    mean difference is the measure: with lr 1e-3 the same samples differ by ~5e-9 on average, a run on other
    samples (another seed, or a batch of 1) by ~3e-3."""
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert float(diff.mean()) <= mean_tol, f"LoRA weights differ: mean {float(diff.mean()):.3g}"
    assert max(float(v.abs().max()) for k, v in a.items() if "lora_B" in k) > 1e-4  # they did learn


# -- Stage-1 --------------------------------------------------------------------------------------

STAGE1 = dict(rank=4, lora_alpha=4, resolution=32, max_sequence_length=16, checkpointing_steps=2,
              report_to="none", learning_rate=1e-3)


def stage1_args(models, dataset, out, steps, **extra) -> list[str]:
    knobs = {**STAGE1, **extra}
    return ["generate", "train-stage1", "--model", str(models / "flux"), "--dataset", str(dataset),
            "--output-dir", str(out), "--max-train-steps", str(steps),
            *[a for k, v in knobs.items() for a in ("--set", f"{k}={v}")]]


def test_stage1_two_processes_of_batch_1_train_as_one_of_batch_2(models, dataset, tmp_path):
    done = launch(stage1_args(models, dataset, tmp_path / "two", 4))
    assert done.stdout.count("Stage-1 LoRA saved to") == 1  # printed once, not once per process
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["step-2", "step-4"]
    one = train_stage1(Stage1Config(model=str(models / "flux"), dataset=str(dataset), output_dir=str(tmp_path / "one"),
                                    max_train_steps=4, train_batch_size=2, **STAGE1), progress=False)
    assert_same_lora(lora_weights(tmp_path / "two" / "lora"), lora_weights(one), mean_tol=1e-6)


def test_stage1_resumes_after_one_process_is_killed(models, dataset, tmp_path):
    out, steps = tmp_path / "killed", 40
    first = out / "checkpoints" / "step-2" / "state.pt"
    killed = launch_and_kill_rank(stage1_args(models, dataset, out, steps), ready=first.exists)
    assert killed.returncode != 0
    assert not (out / "lora").exists()
    launch(stage1_args(models, dataset, out, steps) + ["--resume"])
    straight = train_stage1(Stage1Config(model=str(models / "flux"), dataset=str(dataset),
                                         output_dir=str(tmp_path / "one"), max_train_steps=steps,
                                         train_batch_size=2, **STAGE1), progress=False)
    assert_same_lora(lora_weights(out / "lora"), lora_weights(straight), mean_tol=1e-6)


# -- generate run ---------------------------------------------------------------------------------

def round_of(settings, models, tmp_path, scenarios: int = 5):
    src = tmp_path / "src"
    make_image(src / "ref.png", (20, 90, 200), size=(40, 40))
    rows = [{"id": f"s-{i}", "story_id": "s", "frame_index": i, "prompt": f"a red fox reads {i}",
             "references": ["ref.png"] * (i % 3 > 0)} for i in range(scenarios)]
    (src / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", src / "s.jsonl",
                     spec=ModelSpec(str(models / "flux"), models / "stage1"))


def candidates(settings):
    with session_scope(settings.db_url) as s:
        return {(c.scenario.key, c.index): (c.seed, np.asarray(Image.open(asset_path(settings.store_dir, c.asset)),
                                                                dtype=int))
                for c in s.scalars(select(Candidate))}


def test_generate_run_splits_scenarios_between_processes(models, tmp_path):
    two = sqlite_settings(tmp_path / "two")
    round_of(two, models, tmp_path / "two")
    config = GenerateConfig(num_candidates=2, num_inference_steps=2, height=32, width=32, max_sequence_length=16)
    done = launch(["generate", "run", "--round", "r1", "-k", "2", "--steps", "2", "--height", "32", "--width", "32",
                   "--max-sequence-length", "16", *db_args(two)])
    out = " ".join(done.stdout.split())  # as one line, however the console wrapped it
    assert out.count("candidate(s) generated") == 1  # one summary, not one per process
    assert "10 candidate(s) generated, 0 already there, over 5 scenario(s) by 2 processes" in out
    made = candidates(two)
    assert sorted(made) == [(f"s-{i}", k) for i in range(5) for k in range(2)]  # none missing (keys are unique)

    one = sqlite_settings(tmp_path / "one")
    round_of(one, models, tmp_path / "one")
    generate_round(one, "r1", config, progress=False)
    alone = candidates(one)
    for key, (seed, pixels) in made.items():
        assert seed == alone[key][0] == candidate_seed(0, "r1", key[0], key[1])
        # One thread per process there, several here: float sums may round one pixel level apart.
        assert np.abs(pixels - alone[key][1]).max() <= 1

    again = launch(["generate", "run", "--round", "r1", "-k", "2", "--steps", "2", "--height", "32", "--width", "32",
                    "--max-sequence-length", "16", *db_args(two)])
    assert "0 candidate(s) generated, 10 already there" in " ".join(again.stdout.split())
    assert candidates(two).keys() == made.keys()


# -- dpo train ------------------------------------------------------------------------------------

DPO = dict(rank=4, lora_alpha=4, resolution=32, max_sequence_length=16, save_steps=2, report_to="none",
           learning_rate=1e-2, beta=50.0)


def dpo_args(settings, out, steps, **extra) -> list[str]:
    knobs = {**DPO, **extra}
    return ["dpo", "train", "--round", "r1", "--output-dir", str(out), "--max-steps", str(steps), *db_args(settings),
            *[a for k, v in knobs.items() for a in ("--set", f"{k}={v}")]]


def runs(settings):
    with session_scope(settings.db_url) as s:
        return [(r.status, [m.step for m in r.metrics], r.metrics[-1].values if r.metrics else {}, r.artifact_path)
                for r in s.scalars(select(DpoRun).order_by(DpoRun.id))]


def failures(settings):
    with session_scope(settings.db_url) as s:
        return [(r.status, r.failure_reason) for r in s.scalars(select(DpoRun).order_by(DpoRun.id))]


def test_dpo_two_processes_of_batch_1_train_as_one_of_batch_2(models, tmp_path):
    settings = sqlite_settings(tmp_path)
    judged_for_models(settings, tmp_path, models, scenarios=3, references=2)
    done = launch(dpo_args(settings, tmp_path / "two", 4))
    assert done.stdout.count("DPO LoRA saved to") == 1
    [(status, steps, last, artifact)] = runs(settings)  # one run row, written by one process
    assert status == RunStatus.completed and steps == [1, 2, 3, 4]
    assert {"loss", "rewards/accuracies", "rewards/margins", "grad_norm"} <= last.keys()
    assert artifact == str((tmp_path / "two" / "lora").resolve())
    cache = sorted(p.name for p in (tmp_path / "two" / "cache").iterdir())
    assert not [n for n in cache if ".tmp" in n]  # both processes filled one cache, nothing half-written

    one = train_dpo(DPOConfig(round="r1", output_dir=str(tmp_path / "one"), max_steps=4, train_batch_size=2, **DPO),
                    settings, progress=False)
    assert_same_lora(lora_weights(tmp_path / "two" / "lora"), lora_weights(one), mean_tol=1e-4)  # lr 1e-2
    two_run, one_run = runs(settings)
    for key in ("loss", "rewards/margins"):  # the same pairs, noise and noise levels at every step
        assert two_run[2][key] == pytest.approx(one_run[2][key], abs=1e-4)


def test_dpo_resumes_its_run_after_one_process_is_killed(models, tmp_path):
    settings = sqlite_settings(tmp_path)
    judged_for_models(settings, tmp_path, models, scenarios=3, references=2)
    out, steps = tmp_path / "killed", 40
    killed = launch_and_kill_rank(dpo_args(settings, out, steps),
                                  ready=(out / "checkpoints" / "step-2" / "state.pt").exists)
    assert killed.returncode != 0
    [(status, reason)] = failures(settings)  # rank 0 saw its peer go (or torchrun's SIGTERM) and said so
    assert status == RunStatus.failed and reason, killed.stderr[-4000:]
    launch(dpo_args(settings, out, steps) + ["--resume"])
    [(status, logged, _, _)] = runs(settings)  # the resumed run continued its own row
    assert status == RunStatus.completed and logged == list(range(1, steps + 1))
    straight = train_dpo(DPOConfig(round="r1", output_dir=str(tmp_path / "one"), max_steps=steps,
                                   train_batch_size=2, **DPO), settings, progress=False)
    assert_same_lora(lora_weights(out / "lora"), lora_weights(straight), mean_tol=1e-4)
