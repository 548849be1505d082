"""Random-weight FLUX pipelines for the GPU check: built in the asked dtype on the asked device, saved as a
folder storyloop loads, reused only when identical; FLUX.1-dev's shapes are the real ones."""

import json

import torch

from storyloop.bench.random_flux import MARKER, SHAPES, build_pipeline, save_random_lora, save_random_pipeline
from storyloop.generation.gsa import POSITION_SCHEME
from storyloop.generation.memory_estimate import model_sizes
from storyloop.generation.models import LoraMeta, base_fingerprint, encode_text, load_flux

WORDS = ["a", "fox", "reads"]


def test_a_tiny_bf16_pipeline_saves_loads_and_is_reused_only_when_identical(tmp_path):
    folder, built = save_random_pipeline(tmp_path / "m", SHAPES["tiny"], WORDS, "cpu", torch.bfloat16)
    assert built and json.loads((folder / MARKER).read_text())["dtype"] == "bfloat16"
    pipe = load_flux(str(folder), dtype=torch.bfloat16)
    assert {p.dtype for p in pipe.transformer.parameters()} == {torch.bfloat16}
    assert pipe.transformer.config.num_layers == SHAPES["tiny"].transformer["num_layers"]
    assert encode_text(pipe, ["a fox reads"], 512).prompt_embeds.shape == (1, 512, SHAPES["tiny"].t5["d_model"])
    assert save_random_pipeline(folder, SHAPES["tiny"], reversed(WORDS), "cpu", torch.bfloat16) == (folder, False)
    assert save_random_pipeline(folder, SHAPES["tiny"], WORDS, "cpu", torch.float32)[1]  # another dtype: rebuilt
    assert load_flux(str(folder)).transformer.dtype == torch.float32


def test_a_random_stage1_lora_loads_onto_its_base_with_non_zero_weights(tmp_path):
    folder, _ = save_random_pipeline(tmp_path / "m", SHAPES["tiny"], WORDS)
    base = base_fingerprint(str(folder))
    lora = save_random_lora(tmp_path / "lora", SHAPES["tiny"].transformer, base, rank=4)
    meta = LoraMeta.read(lora)
    assert (meta.kind, meta.base, meta.rank, meta.position_scheme) == ("stage1", base, 4, POSITION_SCHEME)
    pipe = load_flux(str(folder))
    pipe.transformer.load_lora_adapter(str(lora), weight_name="pytorch_lora_weights.safetensors",
                                      adapter_name="stage1")  # diffusers' own loader: every key fits
    b = [p for n, p in pipe.transformer.named_parameters() if "lora_B.stage1" in n]
    assert b and all(float(p.detach().abs().sum()) > 0 for p in b)


def test_flux1_dev_shapes_are_the_real_model_and_t5_can_be_shortened():
    pipe = build_pipeline(SHAPES["flux1-dev"], WORDS, device="meta", dtype=torch.bfloat16)
    assert pipe.transformer.device.type == "meta" and pipe.transformer.dtype == torch.bfloat16
    real = model_sizes(SHAPES["flux1-dev"].transformer, "flux1")  # FLUX.1-dev's published configs, counted
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(pipe.transformer) == real.transformer and round(real.transformer / 1e9, 1) == 11.9
    assert (count(pipe.text_encoder_2), count(pipe.text_encoder), count(pipe.vae)) == (real.t5, real.clip, real.vae)
    assert pipe.vae_scale_factor * 2 == 16 and pipe.tokenizer.model_max_length == 77
    short = build_pipeline(SHAPES["flux1-dev"], WORDS, device="meta", t5_layers=2).text_encoder_2
    assert short.config.num_layers == 2 and short.config.d_model == 4096 and count(short) < real.t5 / 8
