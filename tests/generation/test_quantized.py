"""A quantised frozen base on the CPU (torchao int8 weight-only) with a tiny FLUX: close to the unquantised
model, trains a LoRA, and the LoRA loads onto the unquantised base; loading refuses what it cannot do."""

import json
import sys

import pytest
import torch
from diffusers.training_utils import cast_training_params

from storyloop.generation.flux import References, TextEmbeds, predict_with_references
from storyloop.generation.gsa import POSITION_SCHEME, install_gsa
from storyloop.generation.lora import load_lora, lora_config, save_lora
from storyloop.generation.memory import FP16_REFUSED
from storyloop.generation.models import LoraMeta, ModelError, base_fingerprint, base_identity, load_flux
from storyloop.generation.tiny import tiny_flux_pipeline

WORDS = "a red fox reads".split()
GRID = (4, 4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    pipe = tiny_flux_pipeline(WORDS)
    with torch.no_grad():  # diffusers zero-initialises output layers; randomise so every path carries signal
        for p in pipe.transformer.parameters():
            p.normal_(0, 0.2)
    pipe.save_pretrained(root / "flux")
    return root / "flux"


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def text(n):
        return TextEmbeds(torch.randn(n, 6, 32, generator=g), torch.randn(n, 16, generator=g))

    refs = References(torch.randn(2, 16, 16, generator=g), text(2), GRID)
    return torch.randn(1, 16, 16, generator=g), text(1), refs, torch.randn(1, 16, 16, generator=g)


def gsa_forward(transformer, seed: int = 0) -> torch.Tensor:
    x, text, refs, _ = inputs(seed)
    return predict_with_references(transformer, x, torch.tensor([0.6]), text, GRID, refs).float()


def test_int8_base_is_quantized_and_its_gsa_forward_is_close(folder):
    from torchao.utils import TorchAOBaseTensor  # torchao is in the dev extra: no skip

    plain = load_flux(str(folder)).transformer
    quant = load_flux(str(folder), quantization="int8").transformer
    weight = quant.transformer_blocks[0].attn.to_q.weight
    assert isinstance(weight, TorchAOBaseTensor) and weight.qdata.dtype == torch.int8
    assert not isinstance(plain.transformer_blocks[0].attn.to_q.weight, TorchAOBaseTensor)
    for model in (plain, quant):
        install_gsa(model)
    with torch.no_grad():
        a, b = gsa_forward(plain), gsa_forward(quant)
    rel = float((a - b).norm() / a.norm())
    assert 0 < rel < 0.05  # int8 per-row rounding through 4 blocks: close, but not the same model


def test_lora_trains_on_an_int8_base_and_loads_onto_the_unquantized_one(folder, tmp_path):
    pipe = load_flux(str(folder), quantization="int8")
    transformer = pipe.transformer
    torch.manual_seed(0)
    transformer.add_adapter(lora_config(4, 4), adapter_name="stage1")
    install_gsa(transformer)
    cast_training_params(transformer, dtype=torch.float32)
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    assert params and all(p.dtype == torch.float32 for p in params)
    assert all(".lora_" in n for n, p in transformer.named_parameters() if p.requires_grad)  # the base is frozen
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    x, text, refs, target = inputs()
    losses = []
    for _ in range(6):
        out = predict_with_references(transformer, x, torch.tensor([0.6]), text, GRID, refs)
        loss = (out.float() - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    transformer.eval()
    with torch.no_grad():
        trained = gsa_forward(transformer, seed=1)

    base = base_fingerprint(str(folder))
    save_lora(transformer, "stage1", tmp_path / "lora", LoraMeta("stage1", base, POSITION_SCHEME, 4, 4, 6))
    plain = load_flux(str(folder))
    load_lora(plain, tmp_path / "lora", "stage1", base_identity(str(folder)), "stage1")
    install_gsa(plain.transformer)
    with torch.no_grad():
        loaded = gsa_forward(plain.transformer, seed=1)
        bare = gsa_forward(load_flux(str(folder)).transformer, seed=1)
    # The LoRA moved the model (trained vs bare) far more than int8 rounding separates the two bases.
    assert float((loaded - trained).norm()) < 0.1 * float((trained - bare).norm())


def test_float16_is_refused_with_the_reason(folder):
    with pytest.raises(ModelError) as err:
        load_flux(str(folder), dtype=torch.float16)
    assert str(err.value) == FP16_REFUSED and "overflow" in FP16_REFUSED and "bfloat16" in FP16_REFUSED


def test_a_missing_backend_is_one_line_saying_what_to_install(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # what an environment without torchao sees
    with pytest.raises(ModelError, match=r"^quantization=int8 needs torchao, which is not installed: "
                                         r"pip install torchao$"):
        load_flux(str(folder), quantization="int8")


def test_nf4_on_a_cpu_and_an_unknown_quantization_are_one_line_errors(folder):
    with pytest.raises(ModelError, match=r"^quantization=nf4 \(bitsandbytes\) runs on CUDA only, not cpu; "
                                         r"here use int8 or fp8$"):
        load_flux(str(folder), quantization="nf4")
    with pytest.raises(ModelError, match=r"^quantization 'int4' is not one of auto, none, nf4, int8, fp8$"):
        load_flux(str(folder), quantization="int4")


def test_a_folder_of_another_pipeline_is_refused_in_one_line(tmp_path):
    other = tmp_path / "sd"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(ModelError, match=r"^.*sd: not a FLUX.1 model: model_index.json names "
                                         r"StableDiffusionPipeline \(transformer None\)"):
        load_flux(str(other))
    flux2 = tmp_path / "flux2"
    flux2.mkdir()
    (flux2 / "model_index.json").write_text(json.dumps({
        "_class_name": "Flux2Pipeline", "transformer": ["diffusers", "Flux2Transformer2DModel"]}))
    with pytest.raises(ModelError, match="names Flux2Pipeline"):
        load_flux(str(flux2))
