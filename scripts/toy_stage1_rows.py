"""Table 2's rows without DPO (w/o GSA, w/o DPO) on the loop's held-out scenarios, split by frames of one
and of two characters: what a Stage-1 LoRA does before any judged round.

    .venv/bin/python scripts/toy_stage1_rows.py [--stage1 FOLDER] [--companion-references 0|1]
                                                [--companion-share 0.5] [--samples 3]

The held-out scenarios, seeds and Euler steps are the loop's (`storyloop demo --loop`), so the rows are
the ones its Table 2 would print for these two variants. `--companion-references 0` conditions a
two-character frame on the protagonist's frames only, as before characters had their own references.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from storyloop.generation.gsa import install_gsa
from storyloop.generation.lora import load_lora
from storyloop.generation.models import base_identity, load_flux
from storyloop.toy.assets import BASE, READERS, STAGE1
from storyloop.toy.evaluate import evaluate_variants
from storyloop.toy.loop import METRIC_NAMES, LoopConfig
from storyloop.toy.metrics import Evaluated, character_matches, story_metrics
from storyloop.toy.readers import load_readers
from storyloop.toy.scenarios import make_scenarios
from storyloop.toy.world import split_characters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage1", type=Path, default=STAGE1, help="Stage-1 LoRA folder (default: the committed one)")
    parser.add_argument("--companion-references", type=int, default=1)
    parser.add_argument("--companion-share", type=float, default=LoopConfig().companion_share)
    parser.add_argument("--samples", type=int, default=LoopConfig().eval_samples)
    args = parser.parse_args()
    start = time.perf_counter()
    config = LoopConfig(companion_share=args.companion_share)
    # the loop's held-out scenarios (loop.evaluation_scenarios), with the references asked for
    scenarios = make_scenarios(split_characters()[1], config.eval_stories, seed=config.seed + 202, prefix="r2s",
                               companion_share=config.companion_share,
                               companion_references=args.companion_references)
    pipe = load_flux(str(BASE))
    load_lora(pipe, args.stage1, "stage1", base_identity(str(BASE)), "stage1")
    pipe.transformer.set_adapters(["stage1"])
    install_gsa(pipe.transformer)
    readers = load_readers(READERS)
    _, readings, _ = evaluate_variants(pipe, readers, scenarios, seed=config.seed, steps=config.steps,
                                       samples=args.samples)
    pairs = sum(sc.asked.companion is not None for sc in scenarios)
    print(f"{len(scenarios)} held-out scenarios ({pairs} with two characters) x {args.samples} seeds, "
          f"{config.steps} Euler steps; Stage-1 {args.stage1}; companion references {args.companion_references}")
    print(f"{'':24}" + "".join(f"{m:>21}" for m in METRIC_NAMES) + f"{'companion identity':>21}")
    for variant, rows in readings.items():
        for name, keep in (("all", lambda sc: True), ("one character", lambda sc: sc.asked.companion is None),
                           ("two characters", lambda sc: sc.asked.companion is not None)):
            items = [Evaluated(f"{sc.story_id}#{j}", sc.asked, r) for sc, rs in zip(scenarios, rows) if keep(sc)
                     for j, r in enumerate(rs)]
            m = story_metrics(items)
            second = [character_matches(it.reading, it.frame)[1] for it in items if it.frame.companion is not None]
            companion = f"{100 * sum(second) / len(second):>21.1f}" if second else f"{'-':>21}"
            print(f"{variant + ', ' + name:24}" + "".join(f"{m[k]:>21.1f}" for k in METRIC_NAMES) + companion)
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
