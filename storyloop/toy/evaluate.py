"""Generating toy frames with each model variant and measuring them (the rows of the paper's Table 2).

Variants, all from the same seeds:
  "w/o GSA"  the base model from the prompt alone (no references, no Stage-1 LoRA)
  "w/o DPO"  base + Stage-1 LoRA, references through GSA (cached K/V)
  "full"     base + Stage-1 + DPO LoRA, references through GSA (written with the DPO LoRA off,
             exactly as `generate run` and the DPO trainer do)
"""

from __future__ import annotations

import math
import random
from contextlib import ExitStack

import numpy as np
import torch
from diffusers import FluxPipeline

from storyloop.generation.flux import References, write_reference_cache
from storyloop.generation.gsa import REFERENCE_PROMPT
from storyloop.generation.lora import adapter_off
from storyloop.generation.models import decode_tokens, encode_text
from storyloop.generation.sampling import sample
from storyloop.toy.data import image_tokens
from storyloop.toy.judge import assess, prefer
from storyloop.toy.metrics import Evaluated, story_metrics
from storyloop.toy.model import MAX_SEQUENCE_LENGTH
from storyloop.toy.readers import AttributeReader, read
from storyloop.toy.render import render
from storyloop.toy.scenarios import ToyScenario

VARIANTS = ("w/o GSA", "w/o DPO", "full")
GRID = (8, 8)


def adapters_for(pipe: FluxPipeline, variant: str) -> ExitStack:
    """Switch the transformer's adapters to `variant` for the duration (scaling to zero, no reloads)."""
    stack = ExitStack()
    off = {"w/o GSA": ("stage1", "dpo"), "w/o DPO": ("dpo",), "full": ()}[variant]
    for name in off:
        stack.enter_context(adapter_off(pipe.transformer, name))
    return stack


@torch.no_grad()
def generate_variant(pipe: FluxPipeline, scenarios: list[ToyScenario], variant: str, seeds: list[int],
                     steps: int = 20) -> list:
    images = []
    empty = encode_text(pipe, [REFERENCE_PROMPT], MAX_SEQUENCE_LENGTH)
    with adapters_for(pipe, variant):
        for sc, seed in zip(scenarios, seeds):
            text = encode_text(pipe, [sc.prompt], MAX_SEQUENCE_LENGTH)
            refs = cache = None
            if variant != "w/o GSA":
                refs = References(image_tokens([render(f) for f in sc.references]), empty.expand(len(sc.references)),
                                  GRID)
                with adapter_off(pipe.transformer, "dpo"):  # references through Stage-1 only, as everywhere
                    cache = write_reference_cache(pipe.transformer, refs)
            tokens = sample(pipe.transformer, pipe.scheduler, text, GRID, [seed], refs, steps, 3.5,
                            use_cache=True, reference_cache=cache)
            images.append(decode_tokens(pipe, tokens, GRID)[0])
    return images


def evaluate_variants(pipe: FluxPipeline, readers: AttributeReader, scenarios: list[ToyScenario],
                      seed: int = 0, steps: int = 20) -> tuple[dict, dict, dict]:
    """(metrics per variant, readings per variant, images per variant)."""
    seeds = [random.Random(f"{seed}:{sc.key}").getrandbits(31) for sc in scenarios]
    metrics, readings, images = {}, {}, {}
    for variant in VARIANTS:
        if variant == "full" and "dpo" not in (getattr(pipe.transformer, "peft_config", None) or {}):
            continue
        images[variant] = generate_variant(pipe, scenarios, variant, seeds, steps)
        readings[variant] = read(readers, images[variant])
        metrics[variant] = story_metrics([Evaluated(sc.story_id, sc.asked, r)
                                          for sc, r in zip(scenarios, readings[variant])])
    return metrics, readings, images


def win_rate(scenarios: list[ToyScenario], challenger: list[dict], incumbent: list[dict],
             seed: int = 0, resamples: int = 2000) -> tuple[float, tuple[float, float], dict]:
    """Share of scenarios where the judge prefers the challenger's frame (ties count half), with a
    bootstrap 95% interval over scenarios."""
    scores = np.array([prefer(assess(c, sc.asked), assess(i, sc.asked))
                       for sc, c, i in zip(scenarios, challenger, incumbent)])
    rng = np.random.default_rng(seed)
    boots = scores[rng.integers(0, len(scores), (resamples, len(scores)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    counts = {"wins": int((scores == 1).sum()), "ties": int((scores == 0.5).sum()), "losses": int((scores == 0).sum())}
    return float(scores.mean()), (float(lo), float(hi)), counts


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half
