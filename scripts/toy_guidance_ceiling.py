"""How large a change does a 65 % win rate ask for? Stage-1 with reference guidance against Stage-1 without.

    .venv/bin/python scripts/toy_guidance_ceiling.py 1.5 2 3

On the toy loop's validation scenarios (characters no model and no round has seen; the seeds and Euler
steps its DPO validation uses), each scale's frames are judged against unguided Stage-1 frames of the
same seeds by the scripted judge that reports the DPO win rate. It calibrates that figure: reference
guidance is the largest change in consistency that anything tried on the toy world has made.
"""

from __future__ import annotations

import argparse

from storyloop.generation.gsa import install_gsa
from storyloop.generation.models import load_flux
from storyloop.toy.assets import BASE, READERS, STAGE1
from storyloop.toy.evaluate import ValidationJudge, generate_variant, read_nested, win_rate
from storyloop.toy.loop import LoopConfig, round1_scenarios, validation_scenarios
from storyloop.toy.readers import load_readers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scales", nargs="+", type=float, help="reference-guidance scales to judge against 1")
    args = parser.parse_args()
    config = LoopConfig()
    scenarios = validation_scenarios(config, round1_scenarios(config))
    readers = load_readers(READERS)
    pipe = load_flux(str(BASE))
    pipe.load_lora_weights(str(STAGE1), adapter_name="stage1")
    install_gsa(pipe.transformer)
    judge = ValidationJudge(pipe, readers, scenarios, config.seed, config.val_steps, config.val_samples)

    def readings(scale: float) -> list[list[dict]]:  # the loop's validation frames: its seeds and steps
        frames = generate_variant(pipe, scenarios, "w/o DPO", judge.seeds, judge.steps, reference_guidance_scale=scale)
        return read_nested(readers, frames)

    unguided = readings(1.0)
    print(f"{len(scenarios)} validation scenarios x {config.val_samples} seeds, {config.val_steps} Euler steps")
    for scale in args.scales:
        rate, (lo, hi), counts = win_rate(scenarios, readings(scale), unguided)
        print(f"s = {scale:g}: {100 * rate:.1f} % over unguided Stage-1 (95 % CI {100 * lo:.1f}-{100 * hi:.1f}), "
              f"{counts}", flush=True)


if __name__ == "__main__":
    main()
