"""Generating toy frames with each model variant and measuring them (the rows of the paper's Table 2).

Variants, all from the same seeds:
  "w/o GSA"  the base model from the prompt alone (no references, no Stage-1 LoRA)
  "w/o DPO"  base + Stage-1 LoRA, references through GSA (cached K/V)
  "full"     base + Stage-1 + DPO LoRA, references through GSA (written with the DPO LoRA off,
             exactly as `generate run` and the DPO trainer do)
"""

from __future__ import annotations

import random
from contextlib import ExitStack

import numpy as np
import torch
from diffusers import FluxPipeline

from storyloop.dpo.trainer import EvalResult
from storyloop.generation.flux import References, write_reference_cache
from storyloop.generation.gsa import REFERENCE_PROMPT
from storyloop.generation.lora import adapter_off
from storyloop.generation.models import decode_tokens, encode_text
from storyloop.generation.sampling import sample
from storyloop.toy.data import image_tokens
from storyloop.toy.judge import compare
from storyloop.toy.metrics import Evaluated, story_metrics
from storyloop.toy.model import MAX_SEQUENCE_LENGTH
from storyloop.toy.readers import AttributeReader, read
from storyloop.toy.render import render
from storyloop.toy.scenarios import ToyScenario

VARIANTS = ("w/o GSA", "w/o DPO", "full")
GRID = (8, 8)


def adapters_for(transformer, variant: str) -> ExitStack:
    """Switch the transformer's adapters to `variant` for the duration (scaling to zero, no reloads)."""
    stack = ExitStack()
    off = {"w/o GSA": ("stage1", "dpo"), "w/o DPO": ("dpo",), "full": ()}[variant]
    for name in off:
        stack.enter_context(adapter_off(transformer, name))
    return stack


def sample_seeds(scenarios: list[ToyScenario], seed: int, samples: int) -> list[list[int]]:
    """`samples` seeds per scenario, a pure function of (seed, scenario key, sample index)."""
    return [[random.Random(f"{seed}:{sc.key}" + (f":{j}" if j else "")).getrandbits(31) for j in range(samples)]
            for sc in scenarios]


@torch.no_grad()
def generate_variant(pipe: FluxPipeline, scenarios: list[ToyScenario], variant: str, seeds: list[list[int]],
                     steps: int = 20, transformer=None, reference_guidance_scale: float = 1.0) -> list[list]:
    """One image per seed of each scenario (a scenario's seeds are denoised as one batch).

    `transformer` replaces the pipeline's (the DPO trainer's policy, during training);
    `reference_guidance_scale` is `sample`'s (1: the paper's sampler).
    """
    images = []
    transformer = transformer or pipe.transformer
    empty = encode_text(pipe, [REFERENCE_PROMPT], MAX_SEQUENCE_LENGTH)
    with adapters_for(transformer, variant):
        for sc, own in zip(scenarios, seeds):
            text = encode_text(pipe, [sc.prompt], MAX_SEQUENCE_LENGTH).expand(len(own))
            refs = cache = None
            if variant != "w/o GSA" and reference_guidance_scale != 0.0:  # s = 0 samples without references
                refs = References(image_tokens([render(f) for f in sc.references]), empty.expand(len(sc.references)),
                                  GRID)
                with adapter_off(transformer, "dpo"):  # references through Stage-1 only, as everywhere
                    cache = write_reference_cache(transformer, refs)
            tokens = sample(transformer, pipe.scheduler, text, GRID, own, refs, steps, 3.5,
                            use_cache=True, reference_cache=cache, reference_guidance_scale=reference_guidance_scale)
            images.append(decode_tokens(pipe, tokens, GRID))
    return images


def evaluate_variants(pipe: FluxPipeline, readers: AttributeReader, scenarios: list[ToyScenario],
                      seed: int = 0, steps: int = 20, samples: int = 1) -> tuple[dict, dict, dict]:
    """(metrics per variant, readings per variant, images per variant), every variant from the same seeds.

    Readings are [scenario][sample]; metrics pool all samples (self-consistency compares the frames
    of one story made with the same sample index); images keep the first sample, for pictures.
    """
    seeds = sample_seeds(scenarios, seed, samples)
    metrics, readings, images = {}, {}, {}
    for variant in VARIANTS:
        if variant == "full" and "dpo" not in (getattr(pipe.transformer, "peft_config", None) or {}):
            continue
        made = generate_variant(pipe, scenarios, variant, seeds, steps)
        readings[variant] = read_nested(readers, made)
        images[variant] = [ims[0] for ims in made]
        metrics[variant] = story_metrics([Evaluated(f"{sc.story_id}#{j}", sc.asked, r)
                                          for sc, rs in zip(scenarios, readings[variant]) for j, r in enumerate(rs)])
    return metrics, readings, images


def read_nested(readers: AttributeReader, images: list[list]) -> list[list[dict]]:
    """Readings shaped like the images ([scenario][sample]), read in one batch."""
    flat = read(readers, [im for ims in images for im in ims])
    sizes = np.cumsum([0] + [len(ims) for ims in images])
    return [flat[a:b] for a, b in zip(sizes[:-1], sizes[1:])]


def win_rate(scenarios: list[ToyScenario], challenger: list[list[dict]], incumbent: list[list[dict]],
             seed: int = 0, resamples: int = 2000) -> tuple[float, tuple[float, float], dict]:
    """Share of paired frames (same scenario, same seed) where the judge prefers the challenger's (ties
    count half), with a bootstrap 95% interval that resamples scenarios (a scenario's samples together)."""
    scores = np.array([[compare(c, i, sc.asked) for c, i in zip(cs, is_)]
                       for sc, cs, is_ in zip(scenarios, challenger, incumbent)])
    per_scenario = scores.mean(axis=1)
    rng = np.random.default_rng(seed)
    boots = per_scenario[rng.integers(0, len(per_scenario), (resamples, len(per_scenario)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    counts = {"wins": int((scores == 1).sum()), "ties": int((scores == 0.5).sum()), "losses": int((scores == 0).sum())}
    return float(scores.mean()), (float(lo), float(hi)), counts


class ValidationJudge:
    """The toy loop's DPO `evaluate` callback: the scripted judge's win rate of the policy over Stage-1
    on validation scenarios (stories used nowhere else, never the held-out evaluation), so the loop can
    keep its best DPO step without looking at what it reports."""

    def __init__(self, pipe: FluxPipeline, readers: AttributeReader, scenarios: list[ToyScenario], seed: int = 0,
                 steps: int = 20, samples: int = 1, log=None):
        self.pipe, self.readers, self.scenarios, self.steps, self.log = pipe, readers, scenarios, steps, log
        self.seeds = sample_seeds(scenarios, seed + 1, samples)
        self.stage1: list[list[dict]] | None = None
        self.history: dict[int, float] = {}

    def _read(self, transformer, variant: str) -> list[list[dict]]:
        return read_nested(self.readers, generate_variant(self.pipe, self.scenarios, variant, self.seeds, self.steps,
                                                          transformer))

    def __call__(self, transformer, step: int) -> EvalResult:
        if self.stage1 is None:  # the DPO adapter off: exactly the Stage-1 model
            self.stage1 = self._read(transformer, "w/o DPO")
        rate, (lo, hi), counts = win_rate(self.scenarios, self._read(transformer, "full"), self.stage1)
        self.history[step] = round(rate, 4)
        if self.log:
            self.log(f"  validation win rate at step {step}: {100 * rate:.1f} %")
        return EvalResult(rate, {"eval/win_rate": rate, "eval/win_rate_ci95_lo": lo, "eval/win_rate_ci95_hi": hi,
                                 **{f"eval/{k}": v for k, v in counts.items()}})
