"""Model FLOPs of a FLUX-architecture transformer, and MFU: achieved model FLOP/s over the GPU's bf16 peak.

Counted from the config. d = heads x head_dim, m = 4 d (the MLP width), K2 double-stream and K1
single-stream blocks, c = in_channels (= out_channels), j = joint_attention_dim (T5 width),
p = pooled_projection_dim; one row (sequence) holds T text and L image tokens, and each of its
queries reads E extra keys (GSA: the image tokens of its N references, E = N L). In multiply-adds
(MACs; 1 MAC = 2 FLOPs):

  per image token   c d (x_embedder) + K2 (4 d^2 + 2 d m) + K1 (3 d^2 + d m + (d + m) d) + d c (proj_out)
  per text token    j d (context_embedder) + K2 (4 d^2 + 2 d m) + K1 (3 d^2 + d m + (d + m) d)
                    A double block sends each token through its own stream's q, k, v, out (4 d^2) and
                    MLP (2 d m); a single block through q, k, v (3 d^2), proj_mlp (d m) and proj_out
                    ((d + m) d). With m = 4 d both are 12 d^2 per token per block.
  per row           K2 12 d^2 (AdaLN of both streams) + K1 3 d^2 + 2 d^2 (norm_out)
                    + (256 d + d^2) per embedded scalar (timestep, and guidance when the model has it)
                    + p d + d^2 (pooled text)
  attention         2 (T + L) (T + L + E) d per block (Q K^T and A V, every head together)

FLUX.1-dev (d = 3072, K2 = 19, K1 = 38): 12.9 GFLOP per token of linears; at 1024^2 (L = 4096,
T = 512) one row's forward is 59.5 TFLOP of linears + 14.9 TFLOP of attention (74.4 in all), and
2 cached references add 26.4 TFLOP of attention to every target row's forward.

Work counted per figure of the GPU check (B = 1 target or pair, N = 2 references):
  stage1 step    forward + backward of the batch [target @ t with E = N L, N references @ 0 with E = 0]
  dpo step       forward of the N references (the K/V cache, no grad), forward of [winner, loser] with
                 the DPO LoRA off (reference model, no grad), forward + backward of [winner, loser] (policy)
  generate run   per scenario: forward of its N references once (cache write), then per candidate
                 `steps` forwards of one target row with E = N L
Backward: the base is frozen (LoRA training), so a backward computes input gradients only: 1x the
forward for the linears and 2x for attention (dQ, dK, dV and dP: four matmuls against the forward's
two). Forward + backward = 2x the linears + 3x the attention. (The usual 6 N per token, i.e. 3x
everything, assumes weight gradients for every weight; here they exist only for the LoRA.)
Not counted: recomputation by gradient checkpointing (model FLOPs, not hardware FLOPs), the LoRA
adapters' own work (2 r (in + out) per adapted linear, about 1 % at rank 16), norms, RoPE, softmax
and other elementwise work, the text encoders and the VAE.

`tests/bench/test_flops.py` checks the forward count against torch's FlopCounterMode running
diffusers' FLUX transformer with GSA (plain, cache write, cached read, batch) on the meta device,
and FLUX.1-dev's figures above by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dense bf16 matmul measured on the GPU machine's H200 (DESIGN.md, "The GPU machine"): the MFU denominator.
PEAK_BF16_TFLOPS = 790.0
TIMESTEP_CHANNELS = 256  # diffusers' Timesteps(num_channels=256) feeding FLUX's time and guidance embedders


@dataclass(frozen=True)
class Flops:
    """FLOPs split by kind: the backward multiplies them differently."""

    linear: float = 0.0
    attention: float = 0.0

    @property
    def total(self) -> float:
        return self.linear + self.attention

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.linear + other.linear, self.attention + other.attention)

    def __mul__(self, k: float) -> Flops:
        return Flops(self.linear * k, self.attention * k)

    __rmul__ = __mul__

    def trained(self) -> Flops:
        """Forward + backward with a frozen base: linears x2 (input gradients only), attention x3."""
        return Flops(2 * self.linear, 3 * self.attention)


def _dims(cfg: dict) -> dict:
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    patch = cfg.get("patch_size", 1) ** 2
    return dict(d=d, m=4 * d, k2=cfg["num_layers"], k1=cfg["num_single_layers"], c_in=cfg["in_channels"],
                c_out=patch * (cfg.get("out_channels") or cfg["in_channels"]), j=cfg["joint_attention_dim"],
                p=cfg["pooled_projection_dim"], guidance=bool(cfg.get("guidance_embeds", False)))


def per_token_macs(cfg: dict) -> tuple[int, int]:
    """Multiply-adds of the linears one (image token, text token) goes through in a forward."""
    x = _dims(cfg)
    d, m = x["d"], x["m"]
    blocks = x["k2"] * (4 * d * d + 2 * d * m) + x["k1"] * (3 * d * d + d * m + (d + m) * d)
    return x["c_in"] * d + blocks + d * x["c_out"], x["j"] * d + blocks


def per_row_macs(cfg: dict) -> int:
    """Multiply-adds of the linears that act once per row (modulation and the conditioning embedders)."""
    x = _dims(cfg)
    d = x["d"]
    scalars = 2 if x["guidance"] else 1
    return (x["k2"] * 12 * d * d + x["k1"] * 3 * d * d + 2 * d * d
            + scalars * (TIMESTEP_CHANNELS * d + d * d) + x["p"] * d + d * d)


def forward(cfg: dict, rows: int, text: int, image: int, extra_keys: int = 0) -> Flops:
    """One forward of `rows` rows of `text` + `image` tokens whose queries also read `extra_keys` keys."""
    x = _dims(cfg)
    image_macs, text_macs = per_token_macs(cfg)
    seq = text + image
    linear = image * image_macs + text * text_macs + per_row_macs(cfg)
    attention = (x["k2"] + x["k1"]) * 2 * seq * (seq + extra_keys) * x["d"]
    return Flops(2.0 * rows * linear, 2.0 * rows * attention)


def stage1_step(cfg: dict, text: int, image: int, refs: int, batch: int = 1) -> Flops:
    """One Stage-1 optimizer step: [targets, references] in one forward with grad, then backward."""
    targets = forward(cfg, batch, text, image, refs * image)
    references = forward(cfg, batch * refs, text, image)
    return (targets + references).trained()


def dpo_step(cfg: dict, text: int, image: int, refs: int, batch: int = 1) -> Flops:
    """One DPO optimizer step: reference K/V written once (no grad), the reference model's forward over
    [winners, losers] (no grad), the policy's forward + backward over them."""
    cache = forward(cfg, batch * refs, text, image)
    pair = forward(cfg, 2 * batch, text, image, refs * image)
    return cache + pair + pair.trained()


def generate_run(cfg: dict, text: int, image: int, refs: int, scenarios: int, candidates: int, steps: int) -> Flops:
    """A `generate run`: per scenario one reference pass, then `steps` forwards per candidate (cached K/V)."""
    cache = forward(cfg, refs, text, image) if refs else Flops()
    return scenarios * (cache + candidates * steps * forward(cfg, 1, text, image, refs * image))


def mfu(flops: Flops | float, seconds: float | None, peak_tflops: float = PEAK_BF16_TFLOPS) -> float | None:
    """Achieved model FLOP/s over the peak; None without a time."""
    if not seconds:
        return None
    total = flops.total if isinstance(flops, Flops) else flops
    return total / seconds / (peak_tflops * 1e12)
