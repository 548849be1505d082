"""The Diffusion-DPO trainer on a tiny FLUX folder, a Stage-1 LoRA and a judged round (float32, CPU)."""

import json
import math
import shutil

import pytest
import torch
from sqlalchemy import select
from typer.testing import CliRunner

from storyloop.cli.main import app

from storyloop.db import session_scope
from storyloop.db.models import DpoMetric, DpoRun, RunStatus
from storyloop.dpo.config import DPOConfig
from storyloop.dpo.data import assemble
from storyloop.db.rounds import RoundError
from storyloop.dpo.trainer import DPOError, DPOTrainer, dpo_loss_for_batch, dpo_velocities
from storyloop.generation.encoding_cache import CacheError
from storyloop.generation.gsa import install_gsa
from storyloop.generation.models import ModelError, load_flux
from storyloop.generation.run import GenerateConfig, generate_round
from tests.conftest import save_tiny_models
from tests.dpo.helpers import judged_for_models, judged_round

WORDS = "a red fox reads sleeps 0 1 2 3".split()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("dpo-models"), WORDS)


@pytest.fixture
def judged(settings, tmp_path, models):
    return judged_for_models(settings, tmp_path, models, scenarios=3, references=2)


def config(tmp_path, **kw):
    base = dict(round="r1", output_dir=str(tmp_path / "dpo"), rank=4, lora_alpha=4, resolution=32,
                max_sequence_length=16, max_steps=3, save_steps=2, report_to="none", learning_rate=1e-2,
                beta=50.0, gradient_checkpointing=True)
    return DPOConfig(**{**base, **kw})


def loaded_trainer(settings, cfg):
    trainer = DPOTrainer(cfg, settings)
    trainer._open_run(resume=False)
    trainer._load()
    return trainer


def first_batch(trainer):
    batch = assemble(trainer.data, [trainer.sampler.pair_at(i) for i in range(2)])
    g = torch.Generator().manual_seed(0)
    return batch, torch.randn(batch.winners.shape, generator=g), torch.tensor([0.3, 0.8])


def test_step0_loss_is_log2_and_accuracy_half(settings, judged, tmp_path):
    trainer = loaded_trainer(settings, config(tmp_path, train_batch_size=2))
    batch, noise, sigmas = first_batch(trainer)
    loss, metrics = dpo_loss_for_batch(trainer.model.pipe.transformer, batch, noise, sigmas, trainer.config)
    assert abs(loss.item() - math.log(2)) < 1e-6
    assert metrics["rewards/accuracies"].item() == 0.5 and metrics["rewards/margins"].item() == 0.0


def test_rpo_alpha_adds_the_winners_own_error_to_the_loss(settings, judged, tmp_path):
    trainer = loaded_trainer(settings, config(tmp_path, train_batch_size=2, rpo_alpha=3.0))
    batch, noise, sigmas = first_batch(trainer)
    transformer = trainer.model.pipe.transformer
    loss, metrics = dpo_loss_for_batch(transformer, batch, noise, sigmas, trainer.config)
    policy, _, target = dpo_velocities(transformer, batch, noise, sigmas, trainer.config.guidance_scale)
    winners_mse = (policy[:2] - target[:2]).float().pow(2).mean()
    assert metrics["sft_loss"].item() == pytest.approx(winners_mse.item(), rel=1e-5)
    assert loss.item() == pytest.approx(math.log(2) + 3.0 * winners_mse.item(), rel=1e-5)
    with pytest.raises(ValueError, match="rpo_alpha"):
        config(tmp_path, rpo_alpha=-1.0)


def test_only_dpo_parameters_change(settings, judged, tmp_path):
    trainer = DPOTrainer(config(tmp_path), settings)
    trainer._open_run(False)
    trainer._load()
    before = {n: p.detach().clone() for n, p in trainer.model.pipe.transformer.named_parameters()}
    trainer._train(resume=False, progress=False)
    after = dict(trainer.model.pipe.transformer.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and all(".dpo." in n for n in changed)
    assert any(".stage1." in n for n in before)  # Stage-1 is there, and frozen


def test_run_is_recorded_with_trl_metric_names(settings, judged, tmp_path):
    lora = DPOTrainer(config(tmp_path), settings).train(progress=False)
    with session_scope(settings.db_url) as s:
        run = s.scalar(select(DpoRun))
        assert run.status is RunStatus.completed and run.artifact_path == str(lora.resolve())
        assert len(run.pair_set_sha256) == 64 and run.code_version.startswith("0.1.0")
        steps = s.scalars(select(DpoMetric).where(DpoMetric.run_id == run.id).order_by(DpoMetric.step)).all()
        assert [m.step for m in steps] == [1, 2, 3]
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                    "grad_norm", "learning_rate"):
            assert key in steps[0].values
        assert abs(steps[0].values["loss"] - math.log(2)) < 1e-5


def test_resume_after_a_kill_equals_an_uninterrupted_run(settings, judged, tmp_path):
    from safetensors.torch import load_file

    straight = DPOTrainer(config(tmp_path / "a", max_steps=4), settings).train(progress=False)
    DPOTrainer(config(tmp_path / "b", max_steps=2), settings).train(progress=False)  # "killed" after step 2
    resumed = DPOTrainer(config(tmp_path / "b", max_steps=4), settings).train(resume=True, progress=False)
    a, b = (load_file(p / "pytorch_lora_weights.safetensors") for p in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with session_scope(settings.db_url) as s:
        runs = s.scalars(select(DpoRun).order_by(DpoRun.id)).all()
        assert len(runs) == 2  # the resumed run continued its own row
        assert [m.step for m in runs[1].metrics] == [1, 2, 3, 4]


def test_diffusers_loader_reproduces_the_trained_policy(settings, judged, tmp_path, models):
    trainer = loaded_trainer(settings, config(tmp_path, max_steps=3, train_batch_size=2))
    lora = trainer._train(resume=False, progress=False)
    batch, noise, sigmas = first_batch(trainer)
    transformer = trainer.model.pipe.transformer.eval()
    with torch.no_grad():
        policy, reference, _ = dpo_velocities(transformer, batch, noise, sigmas, 3.5)
    assert (policy - reference).abs().max() > 1e-4  # the DPO LoRA learned something

    fresh = load_flux(str(models / "flux"))  # base, then diffusers' own LoRA loader for both adapters
    fresh.load_lora_weights(str(models / "stage1"), adapter_name="stage1")
    fresh.load_lora_weights(str(lora), adapter_name="dpo")
    fresh.transformer.set_adapters(["stage1", "dpo"])
    install_gsa(fresh.transformer)
    with torch.no_grad():
        again, again_ref, _ = dpo_velocities(fresh.transformer, batch, noise, sigmas, 3.5)
    assert torch.allclose(again, policy, atol=1e-5) and torch.allclose(again_ref, reference, atol=1e-5)


def failed_reason(url):
    with session_scope(url) as s:
        run = s.scalar(select(DpoRun).order_by(DpoRun.id.desc()))
        return run.status, run.failure_reason


def test_a_round_without_usable_pairs_is_a_clear_failed_run(settings, tmp_path, models):
    judged_round(settings, tmp_path, scenarios=1)
    with pytest.raises(DPOError, match="has no usable pairs"):
        DPOTrainer(config(tmp_path, model=str(models / "flux")), settings).train(progress=False)
    status, reason = failed_reason(settings.db_url)
    assert status is RunStatus.failed and "no usable pairs" in reason


def test_stage1_lora_for_another_base_is_refused(settings, judged, tmp_path, models):
    with pytest.raises(ModelError, match="trained on base"):
        DPOTrainer(config(tmp_path, model=str(models / "other")), settings).train(progress=False)
    assert failed_reason(settings.db_url)[0] is RunStatus.failed


def test_corrupt_cache_entry_is_a_clear_error(settings, judged, tmp_path):
    cfg = config(tmp_path, max_steps=1)
    DPOTrainer(cfg, settings).train(progress=False)
    victim = next((tmp_path / "dpo" / "cache").glob("*.safetensors"))
    victim.write_bytes(b"not a safetensors file")
    with pytest.raises(CacheError, match="is corrupt"):
        DPOTrainer(cfg, settings).train(progress=False)
    status, reason = failed_reason(settings.db_url)
    assert status is RunStatus.failed and "delete it" in reason


def test_next_round_generates_with_stage1_and_the_dpo_lora(settings, judged, tmp_path, models):
    lora = DPOTrainer(config(tmp_path, max_steps=2), settings).train(progress=False)
    scen = tmp_path / "next.jsonl"
    ref = next(settings.store_dir.rglob("*.png"))
    shutil.copy(ref, tmp_path / "ref.png")
    scen.write_text('{"id": "n0", "story_id": "s", "frame_index": 0, "prompt": "a red fox", '
                    '"references": ["ref.png"]}\n')
    env = {"STORYLOOP_DB_URL": settings.db_url, "STORYLOOP_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(app, ["round", "create", "r2", "--parent", "r1", "--scenarios", str(scen),
                                      "--base-model", str(models / "flux"), "--stage1-lora", str(models / "stage1"),
                                      "--dpo-lora", str(lora)], env=env)
    assert result.exit_code == 0, result.output
    cfg = GenerateConfig(num_candidates=1, num_inference_steps=2, height=32, width=32, max_sequence_length=16)
    summary = generate_round(settings, "r2", cfg, progress=False)
    assert summary.generated == 1
    with pytest.raises(ModelError, match="--no-cache is not available with a DPO LoRA"):
        generate_round(settings, "r2", GenerateConfig(**{**cfg.__dict__, "num_candidates": 2,
                                                          "use_reference_cache": False}), progress=False)


def test_load_best_model_at_end_saves_the_best_evaluated_adapter(settings, judged, tmp_path):
    """The evaluate callback sees the adapter of each eval step; the LoRA written is the best one's."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    seen, scores = {}, {1: 0.2, 2: 0.9, 3: 0.5, 4: 0.9}  # a tie with a later step keeps the earlier

    def evaluate(transformer, step):
        assert not transformer.training and not torch.is_grad_enabled()
        seen[step] = {k: v.clone() for k, v in get_peft_model_state_dict(transformer, adapter_name="dpo").items()}
        return scores[step]

    cfg = config(tmp_path, max_steps=4, eval_steps=1, load_best_model_at_end=True)
    lora = DPOTrainer(cfg, settings, evaluate).train(progress=False)
    assert sorted(seen) == [1, 2, 3, 4]
    saved = load_file(lora / "pytorch_lora_weights.safetensors")
    best, last = seen[2], seen[4]
    assert any(not torch.equal(best[k], last[k]) for k in best)
    assert len(saved) == len(best)
    assert all(torch.equal(v, best[k]) for k, v in zip(sorted(best), (saved[k] for k in sorted(saved))))
    meta = (lora / "storyloop_lora.json").read_text()
    assert '"step": 2' in meta and '"eval_pairs": 0' in meta  # a callback scores no held-out pairs
    with session_scope(settings.db_url) as s:
        logged = {m.step: m.values["eval/score"] for m in s.scalars(select(DpoMetric)) if "eval/score" in m.values}
    assert logged == scores


def test_eval_knobs_without_a_callback_are_refused(settings, judged, tmp_path):
    with pytest.raises(ValueError, match="needs eval_steps"):
        config(tmp_path, load_best_model_at_end=True)
    with pytest.raises(DPOError, match="set eval_split"):
        DPOTrainer(config(tmp_path, eval_steps=2), settings)
    with pytest.raises(ValueError, match="eval_split needs eval_steps"):
        config(tmp_path, eval_split=0.3)
    with pytest.raises(ValueError, match=r"eval_split must be in \[0, 1\)"):
        config(tmp_path, eval_split=1.0, eval_steps=1)
    with pytest.raises(DPOError, match="choose one"):
        DPOTrainer(config(tmp_path, eval_split=0.3, eval_steps=1), settings, lambda t, s: 0.0)


def test_eval_split_keeps_scenarios_out_of_training_and_scores_their_pairs(settings, judged, tmp_path):
    trainer = loaded_trainer(settings, config(tmp_path / "a", eval_split=0.3, eval_steps=1))
    held = set(trainer.eval_pools.members.scenario_id)
    assert len(held) == 1 and len(set(trainer.pools.members.scenario_id)) == 3
    assert not held & set(trainer.sampler.epoch(0).scenario_id.tolist()) and trainer.sampler.epoch_size == 6
    assert {p[0] for p in trainer.evaluate.pairs} == held and len(trainer.evaluate.pairs) == 3  # 1 winner x 3 losers
    # Before any step the policy is its reference: the held-out loss is exactly log 2.
    with torch.no_grad():
        result = trainer.evaluate(trainer.model.pipe.transformer, 0)
    assert result.score == pytest.approx(-math.log(2), abs=1e-6)
    assert result.metrics["eval/rewards/accuracies"] == 0.5

    lora = DPOTrainer(config(tmp_path / "b", max_steps=3, eval_split=0.3, eval_steps=1,
                             load_best_model_at_end=True), settings).train(progress=False)
    with session_scope(settings.db_url) as s:
        run = s.scalars(select(DpoRun).order_by(DpoRun.id.desc())).first()
        logged = {m.step: m.values for m in s.scalars(select(DpoMetric).where(DpoMetric.run_id == run.id))}
    assert all(logged[k]["eval/score"] == -logged[k]["eval/loss"] for k in (1, 2, 3))
    best = max((1, 2, 3), key=lambda k: (logged[k]["eval/score"], -k))
    meta = (lora / "storyloop_lora.json").read_text()
    assert f'"step": {best}' in meta and '"eval_pairs": 3' in meta


def test_eval_split_that_would_hold_out_everything_is_refused(settings, judged, tmp_path):
    with pytest.raises(RoundError, match="would hold out all 3"):
        DPOTrainer(config(tmp_path, eval_split=0.9, eval_steps=1), settings).train(progress=False)


def test_the_cli_trains_with_held_out_pairs_and_keeps_the_best_step(settings, judged, tmp_path):
    sets = dict(rank=4, lora_alpha=4, resolution=32, max_sequence_length=16, max_steps=2, save_steps=2,
                report_to="none", eval_split=0.3, eval_steps=1, load_best_model_at_end="true",
                learning_rate="1e-2")  # YAML reads 1e-2 as text; the config makes it a number
    args = ["dpo", "train", "--round", "r1", "--output-dir", str(tmp_path / "cli")]
    args += [part for key, value in sets.items() for part in ("--set", f"{key}={value}")]
    env = {"STORYLOOP_DB_URL": settings.db_url, "STORYLOOP_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    meta = (tmp_path / "cli" / "lora" / "storyloop_lora.json").read_text()
    assert '"eval_pairs": 3' in meta and '"best_eval": {' in meta


def learning_rates(settings, run_index: int = -1) -> list[float]:
    with session_scope(settings.db_url) as s:
        run = s.scalars(select(DpoRun).order_by(DpoRun.id)).all()[run_index]
        return [m.values["learning_rate"] for m in sorted(run.metrics, key=lambda m: m.step)]


def test_a_warmup_schedule_is_followed_resumed_and_summarised(settings, judged, tmp_path):
    from safetensors.torch import load_file

    sched = dict(lr_scheduler="linear", lr_warmup_steps=2, max_steps=4, save_steps=2)
    straight = DPOTrainer(config(tmp_path / "a", **sched), settings).train(progress=False)
    # diffusers' linear schedule: warmup 0 -> lr over 2 steps, then linear decay to 0 at step 4
    assert learning_rates(settings) == pytest.approx([0.0, 0.5e-2, 1e-2, 0.5e-2])
    DPOTrainer(config(tmp_path / "b", **{**sched, "max_steps": 2}), settings).train(progress=False)
    # The 2-step schedule's first steps are the 4-step one's; resumed towards 4, the run follows the 4-step
    # schedule from step 2, so it ends exactly where the straight run does.
    resumed = DPOTrainer(config(tmp_path / "b", **sched), settings).train(resume=True, progress=False)
    a, b = (load_file(p / "pytorch_lora_weights.safetensors") for p in (straight, resumed))
    assert learning_rates(settings)[2:] == pytest.approx([1e-2, 0.5e-2])
    summary = json.loads((tmp_path / "a" / "dpo" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["step_s"] > 0 and summary["peak_gb"] is None  # no GPU here
    assert (summary["memory"], summary["quantization"], summary["precision"]) == ("80gb", "none", "no")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_quantised_base_trains_the_dpo_lora(settings, judged, tmp_path):
    lora = DPOTrainer(config(tmp_path, quantization="int8", max_steps=2), settings).train(progress=False)
    summary = json.loads((tmp_path / "dpo" / "summary.json").read_text())
    assert summary["quantization"] == "int8"
    from safetensors.torch import load_file

    weights = load_file(lora / "pytorch_lora_weights.safetensors")
    assert max(v.abs().max() for k, v in weights.items() if "lora_B" in k) > 0


def test_8bit_adam_without_bitsandbytes_is_one_line_and_records_nothing(settings, judged, tmp_path):
    args = ["dpo", "train", "--round", "r1", "--output-dir", str(tmp_path / "cli"), "--set", "optimizer=adamw8bit"]
    env = {"STORYLOOP_DB_URL": settings.db_url, "STORYLOOP_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 1
    assert "optimizer=adamw8bit needs bitsandbytes" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cli" / "lora").exists()
