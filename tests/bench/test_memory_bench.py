"""`bench memory`: the estimator's pieces against hand-computed values for a tiny config, parameter counts
against closed forms and peft itself, check_fits' message, and the CLI's JSON."""

import json
import math

import pytest
from typer.testing import CliRunner

from storyloop.bench.gsa import CONFIGS
from storyloop.cli.main import app
from storyloop.generation.lora import lora_config
from storyloop.generation.memory_estimate import (A_INFER, A_TRAIN, FLUX1_DEV_TRANSFORMER, GIB, Workload,
                                                  check_fits, estimate, gpu_plan, model_sizes)
from storyloop.generation.models import ModelError

TINY = dict(CONFIGS["tiny"]["transformer"], num_layers=2, num_single_layers=3)  # 2 double + 3 single blocks
D, HD, IN, J, P = 32, 16, 16, 32, 16  # width, head dim, in channels, joint (text) dim, pooled dim
ND, NS = 2, 3
CONTEXT = round(0.5 * GIB)


def closed_form():
    """FLUX transformer counts by hand from diffusers' block definitions (all linears have a bias)."""
    double_w, single_w = 36 * D * D, 15 * D * D  # AdaLN 2x6d^2, attention 8d^2, two MLPs 2x8d^2 | 3+4+5+3 d^2
    top_w = 2 * (256 * D + D * D) + (P * D + D * D) + J * D + IN * D + 2 * D * D + D * IN
    rows = ND * 30 * D + NS * 11 * D + (10 * D + IN)  # output features = biases
    norms = ND * 4 * HD + NS * 2 * HD  # RMSNorm of q, k (and the text stream's) per head dim
    lora_per_rank = ND * 50 * D + NS * 21 * D  # sum of (in + out) over adapted linears
    return ND * double_w + NS * single_w + top_w, rows, rows + norms, lora_per_rank


@pytest.fixture(scope="module")
def tiny():
    return model_sizes(TINY, encoders=None)


def test_parameter_counts_match_closed_forms_and_peft(tiny):
    from diffusers import FluxTransformer2DModel

    linear_weights, rows, other, lora_per_rank = closed_form()
    assert (tiny.width, tiny.blocks) == (D, ND + NS)
    assert (tiny.linear_weights, tiny.linear_rows, tiny.other_params) == (linear_weights, rows, other)
    assert tiny.lora_per_rank == lora_per_rank
    model = FluxTransformer2DModel(**TINY)
    assert tiny.transformer == sum(p.numel() for p in model.parameters())
    model.add_adapter(lora_config(rank=4, alpha=4), adapter_name="x")  # what the trainers train
    assert sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n) == 4 * lora_per_rank


def test_estimate_pieces_equal_hand_computed_bytes(tiny):
    w, rows, other, per_rank = closed_form()
    work = Workload(height=64, width=64, refs=2, batch=1, rank=4, text_len=8)
    L, T, N, K, e = 16, 8, 2, ND + NS, 2  # 64 px / 16 px per token = 4 x 4 tokens
    lora = 4 * per_rank
    nf4_weights = w // 2 + math.ceil(w / 64) * 4 + other * e

    s1 = estimate("stage1", gpu_plan("24gb"), tiny, work)  # NF4, checkpointing, 8-bit Adam
    unit = 3 * (T + L) * D * e  # 1 target + 2 references, one forward
    gsa_keys = 2 * 1 * (T + L + N * L) * D * e
    assert s1.parts == {"weights": nf4_weights, "lora": 4 * lora, "optimizer": 4 * lora + 2 * lora,
                        "reference_kv": 0, "activations": K * unit + A_TRAIN * unit + gsa_keys,
                        "encoders": 0, "cuda_context": CONTEXT}
    assert s1.phases == {"encode": nf4_weights, "train": nf4_weights + 10 * lora + K * unit + A_TRAIN * unit
                         + gsa_keys}
    assert s1.peak == s1.phases["train"] + CONTEXT and s1.fits is True

    dpo = estimate("dpo", gpu_plan("80gb"), tiny, work)  # bf16, AdamW fp32
    unit = 2 * (T + L) * D * e  # winner + loser
    assert dpo.parts["weights"] == (w + other) * e
    assert dpo.parts["lora"] == 4 * lora + e * lora  # trainable fp32 + frozen Stage-1
    assert dpo.parts["optimizer"] == 12 * lora
    assert dpo.parts["reference_kv"] == 2 * K * (1 * N) * L * D * e
    assert dpo.parts["activations"] == K * unit + A_TRAIN * unit + 2 * 2 * (T + L + N * L) * D * e

    full = estimate("stage1", gpu_plan("full"), tiny, work)  # no checkpointing: every block's activations
    unit = 3 * (T + L) * D * e
    assert full.parts["activations"] == K * (A_TRAIN * unit + 2 * (T + L + N * L) * D * e) and full.fits is None

    gen = estimate("generate", gpu_plan("24gb", quantization="int8"), tiny, Workload(64, 64, 2, 3, 4, 8))
    int8_weights = w + 5 * rows + other * e
    acts = A_INFER * 3 * (T + L) * D * e + 2 * 3 * (T + L + N * L) * D * e
    assert gen.parts == {"weights": int8_weights, "lora": 2 * lora * e, "optimizer": 0,
                         "reference_kv": 2 * K * N * L * D * e, "activations": acts, "vae_decode": 0,
                         "encoders": 0, "cuda_context": CONTEXT}
    assert gen.phases["sample"] == int8_weights + 2 * lora * e + 2 * K * N * L * D * e + acts


def test_flux1_dev_counts_and_the_issue_targets():
    assert CONFIGS["flux1-dev"]["transformer"] == FLUX1_DEV_TRANSFORMER  # one config, two tables
    sizes = model_sizes(FLUX1_DEV_TRANSFORMER)
    t5_layer = 4 * 4096 * 4096 + 3 * 4096 * 10240 + 2 * 4096  # attention, gated-GELU MLP, two RMSNorms
    assert sizes.t5 == 32128 * 4096 + 24 * t5_layer + 32 * 64 + 4096  # + embeddings, relative bias, final norm
    clip_layer = 4 * (768 * 768 + 768) + 2 * 2 * 768 + 768 * 3072 + 3072 + 3072 * 768 + 768
    assert sizes.clip == 49408 * 768 + 77 * 768 + 12 * clip_layer + 2 * 768
    assert round(sizes.transformer / 1e9, 1) == 11.9 and sizes.vae_channels == 128
    train, generate = Workload(512, 512, 2), Workload(1024, 1024, 2, batch=4)
    # Issue #23's targets: Stage-1 and DPO at 512^2 with 2 refs in 24 GB (quantised base), generation at
    # 1024^2 with 2 refs in 24 GB, plain bf16 training in 80 GB; and bf16 does not fit 24 GB.
    for mode, use, work, fits in [("24gb", "stage1", train, True), ("24gb", "dpo", train, True),
                                  ("24gb", "generate", generate, True), ("80gb", "stage1", train, True),
                                  ("80gb", "dpo", train, True)]:
        assert estimate(use, gpu_plan(mode), sizes, work).fits is fits, (mode, use)
    assert estimate("stage1", gpu_plan("80gb"), sizes, train).peak_gb > 24
    # The cached K/V of one reference at 1024^2 in bf16: DESIGN.md's ~2.9 GB (decimal) per reference.
    per_ref = estimate("generate", gpu_plan("24gb"), sizes, Workload(1024, 1024, 1, 1)).parts["reference_kv"]
    assert round(per_ref / 1e9, 1) == 2.9


def test_check_fits_names_the_need_the_free_memory_and_the_smaller_mode(tiny):
    work = Workload(64, 64, 2, 1, 4, 8)
    need = estimate("stage1", gpu_plan("80gb"), tiny, work).peak_gb
    with pytest.raises(ModelError) as err:
        check_fits("80gb", "stage1", "cuda:1", sizes=tiny, work=work, free_gb=0.3)
    assert str(err.value) == (f"stage1 in memory mode 80gb needs about {need:.1f} GB of GPU memory, cuda:1 has "
                              f"0.3 GB free: use --set memory=24gb")
    with pytest.raises(ModelError, match=r"^dpo in memory mode 24gb needs about 0\.5 GB of GPU memory, cuda has "
                                         r"0\.1 GB free: no smaller mode: use fewer references, a smaller "
                                         r"resolution or batch, or a larger GPU$"):
        check_fits("24gb", "dpo", "cuda", sizes=tiny, work=work, free_gb=0.1)
    assert check_fits("80gb", "stage1", "cuda", sizes=tiny, work=work, free_gb=need + 0.01).peak_gb == need
    assert check_fits("80gb", "stage1", "cpu", sizes=tiny, work=work, free_gb=0.0) is None  # a CPU: nothing
    # FLUX.1-dev on a 24 GB card: bf16 training is refused with the way out, the quantised mode passes.
    with pytest.raises(ModelError, match=r"^stage1 in memory mode 80gb needs about 32\.\d GB .* memory=24gb$"):
        check_fits("80gb", "stage1", "cuda", free_gb=23.5)
    assert check_fits("24gb", "stage1", "cuda", free_gb=23.5).fits


def test_cli_prints_the_estimate_as_json_and_takes_measured_figures(tmp_path):
    measured = tmp_path / "gpu_check.json"
    measured.write_text(json.dumps({"peak_gb": {"24gb": {"stage1": 12.3, "dpo": 13.1, "generate": 15.0}}}))
    result = CliRunner().invoke(app, ["bench", "memory", "--config", "flux1-dev", "--mode", "24gb", "--json",
                                      "--measured", str(measured)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out["estimated_gb"]) == set(out["fits"]) == set(out["breakdown_gb"]) == {"stage1", "dpo", "generate"}
    assert out["measured_gb"] == {"stage1": 12.3, "dpo": 13.1, "generate": 15.0}
    assert out["fits"] == {"stage1": True, "dpo": True, "generate": True} and out["quantization"] == "nf4"
    assert out["breakdown_gb"]["dpo"]["reference_kv"] > 0 and out["workload"]["generate"]["resolution"] == [1024, 1024]
    plain = CliRunner().invoke(app, ["bench", "memory", "--mode", "80gb", "--resolution", "1024", "--refs", "3"])
    assert plain.exit_code == 0 and "fits 80 GB" in plain.stderr
    assert json.loads(plain.stdout.strip().splitlines()[-1])["measured_gb"] is None


def test_cli_bad_mode_or_measured_file_is_one_line(tmp_path):
    bad = CliRunner().invoke(app, ["bench", "memory", "--config", "tiny", "--mode", "12gb"])
    assert bad.exit_code == 1 and "memory mode '12gb' is not one of full, 80gb, 24gb" in bad.output
    empty = tmp_path / "m.json"
    empty.write_text("{}")
    bad = CliRunner().invoke(app, ["bench", "memory", "--config", "tiny", "--measured", str(empty)])
    assert bad.exit_code == 1 and "no measured peak for mode 24gb" in bad.output
