"""The reference gain: a DPO-trained bias on target->reference attention, saved and loaded with the LoRA."""

import math

import pytest
import torch
from peft.utils import get_peft_model_state_dict

from storyloop.dpo.trainer import DPOTrainer, dpo_loss_for_batch, dpo_velocities
from storyloop.generation.gsa import install_gsa
from storyloop.generation.lora import adapter_off, load_lora
from storyloop.generation.models import ModelError, base_identity, load_flux
from storyloop.generation.reference_gain import FILE, reference_gain_state, reference_mask
from tests.dpo.test_trainer import config, first_batch, judged, loaded_trainer, models  # noqa: F401 (fixtures)


def test_the_mask_adds_each_heads_bias_to_reference_logits_only():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 3, 8, generator=g) for n in (5, 9, 9))  # 5 own keys, then 4 references'
    bias = torch.tensor([1.5, 0.0, -2.0])
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=reference_mask(bias, q, k)).transpose(1, 2)
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8)
    logits[..., 5:] += bias[None, :, None, None]
    expected = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v)
    assert torch.allclose(out, expected, atol=1e-6)


def test_a_zero_gain_is_exactly_the_stage1_model_at_step0(settings, judged, tmp_path):
    trainer = loaded_trainer(settings, config(tmp_path, train_batch_size=2, train_reference_gain=True))
    transformer = trainer.model.pipe.transformer
    batch, noise, sigmas = first_batch(trainer)
    loss, _ = dpo_loss_for_batch(transformer, batch, noise, sigmas, trainer.config)
    # log 2 up to float32 rounding: with a gain, attention takes a (zero) mask, and torch may run masked attention
    # with a different kernel when gradients are on than off (seen with OMP_NUM_THREADS=1: 2.3e-6). Without a
    # gain both passes run the same kernel and step 0 is exactly log 2 (test_trainer's step-0 test).
    assert abs(loss.item() - math.log(2)) < 1e-5
    with torch.no_grad():  # and the zero gain changes nothing against a model that has none
        with_gain, _, _ = dpo_velocities(transformer, batch, noise, sigmas, 3.5)
        plain = loaded_trainer(settings, config(tmp_path / "plain", train_batch_size=2))
        without, _, _ = dpo_velocities(plain.model.pipe.transformer, batch, noise, sigmas, 3.5)
    assert torch.allclose(with_gain, without, atol=1e-6)


def test_the_gain_trains_and_is_saved_and_loaded_with_the_lora(settings, judged, tmp_path, models):
    cfg = config(tmp_path, max_steps=3, train_batch_size=2, train_reference_gain=True, reference_gain_learning_rate=0.5)
    trainer = loaded_trainer(settings, cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.pipe.transformer.named_parameters()}
    lora = trainer._train(resume=False, progress=False)
    transformer = trainer.model.pipe.transformer.eval()
    changed = {n for n, p in transformer.named_parameters() if not torch.equal(before[n], p.detach())}
    assert any("reference_gains.dpo" in n for n in changed) and all(".dpo." in n for n in changed)
    gain = reference_gain_state(transformer, "dpo")
    layers = transformer.config.num_layers + transformer.config.num_single_layers  # one gain per attention
    assert len(gain) == layers and all(v.abs().max() > 0 for v in gain.values())
    assert (lora / FILE).exists() and '"reference_gain": true' in (lora / "storyloop_lora.json").read_text()

    batch, noise, sigmas = first_batch(trainer)
    with torch.no_grad():
        policy, reference, _ = dpo_velocities(transformer, batch, noise, sigmas, 3.5)
        with adapter_off(transformer, "dpo"):  # the reference model has neither the LoRA nor the gain
            stage1, _, _ = dpo_velocities(transformer, batch, noise, sigmas, 3.5)
    assert torch.equal(stage1, reference)

    fresh = load_flux(str(models / "flux"))  # what `generate run` does with a round's DPO LoRA
    base = base_identity(str(models / "flux"))
    load_lora(fresh, models / "stage1", "stage1", base, "stage1")
    load_lora(fresh, lora, "dpo", base, "dpo")
    fresh.transformer.set_adapters(["stage1", "dpo"])
    install_gsa(fresh.transformer)
    with torch.no_grad():
        again, again_ref, _ = dpo_velocities(fresh.transformer, batch, noise, sigmas, 3.5)
    assert torch.allclose(again, policy, atol=1e-5) and torch.allclose(again_ref, reference, atol=1e-5)

    (lora / FILE).write_bytes((lora / FILE).read_bytes()[:20])
    with pytest.raises(Exception):
        load_lora(load_flux(str(models / "flux")), lora, "dpo", base, "dpo")


def test_resume_restores_the_gain_too(settings, judged, tmp_path):
    def cfg(folder, steps):
        return config(tmp_path / folder, max_steps=steps, train_reference_gain=True, reference_gain_learning_rate=0.5)

    straight = DPOTrainer(cfg("a", 4), settings)
    straight.train(progress=False)
    DPOTrainer(cfg("b", 2), settings).train(progress=False)  # "killed" after step 2
    resumed = DPOTrainer(cfg("b", 4), settings)
    resumed.train(resume=True, progress=False)
    a, b = (reference_gain_state(t.model.pipe.transformer, "dpo") for t in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = (get_peft_model_state_dict(t.model.pipe.transformer, adapter_name="dpo") for t in (straight, resumed))
    assert all(torch.equal(la[k], lb[k]) for k in la)


def test_a_gain_for_another_architecture_is_refused(settings, judged, tmp_path, models):
    lora = DPOTrainer(config(tmp_path, max_steps=1, train_reference_gain=True), settings).train(progress=False)
    from safetensors.torch import load_file, save_file
    state = load_file(str(lora / FILE))
    state.pop(sorted(state)[0])
    save_file(state, str(lora / FILE))
    with pytest.raises(ModelError, match="reference gain's layers do not match"):
        load_lora(load_flux(str(models / "flux")), lora, "dpo", base_identity(str(models / "flux")), "dpo")


def test_gain_only_leaves_the_lora_at_zero(settings, judged, tmp_path):
    trainer = loaded_trainer(settings, config(tmp_path, max_steps=2, train_reference_gain=True, train_lora=False))
    before = {n: p.detach().clone() for n, p in trainer.model.pipe.transformer.named_parameters()}
    trainer._train(resume=False, progress=False)
    changed = {n for n, p in trainer.model.pipe.transformer.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("reference_gains.dpo" in n for n in changed)
    with pytest.raises(ValueError, match="nothing would learn"):
        config(tmp_path, train_lora=False)
