"""A non-square round end to end on the tiny model: references of two aspects, candidates at 48x32,
judgments, a DPO LoRA, and a next round generated with it."""

import json

import pytest
from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.models import Candidate, DpoRun, Role, Round, RunStatus, Scenario
from storyloop.db.rounds import ModelSpec, create_round
from storyloop.db.users import add_user
from storyloop.dpo.config import DPOConfig
from storyloop.dpo.data import candidate_size
from storyloop.dpo.trainer import DPOError, DPOTrainer, train_dpo
from storyloop.generation import run
from storyloop.generation.buckets import reference_size
from storyloop.generation.run import GenerateConfig, generate_round
from tests.conftest import make_image, save_tiny_models
from tests.dpo.helpers import A, C, P, judge, judged_for_models

WORDS = "a red fox reads sleeps in the forest 0 1 2 3".split()
WIDTH, HEIGHT = 48, 32  # the tiny VAE's factor is 4 (2x down, 2x2 packing): a 12 x 8 token grid
FACTOR = 4
WIDE, TALL = (60, 30), (30, 45)  # two reference aspects, 2:1 and 2:3, neither the candidates'


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("nonsquare-models"), WORDS)


def scenarios_file(folder, name, n=2):
    make_image(folder / "wide.png", (200, 60, 20), size=WIDE)
    make_image(folder / "tall.png", (30, 60, 200), size=TALL)
    rows = [{"id": f"{name}-{i}", "story_id": "s", "frame_index": i, "prompt": f"a red fox {i} reads",
             "references": ["wide.png", "tall.png"]} for i in range(n)]
    (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder / f"{name}.jsonl"


def spy_reference_grids(monkeypatch) -> list:
    seen, real = [], run.write_reference_cache
    monkeypatch.setattr(run, "write_reference_cache", lambda t, refs, *a, **k: seen.append(refs.grids) or
                        real(t, refs, *a, **k))
    return seen


@pytest.mark.slow
def test_a_non_square_round_generates_trains_dpo_and_generates_again(settings, tmp_path, models, monkeypatch):
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", scenarios_file(tmp_path, "r1"),
                     spec=ModelSpec(str(models / "flux"), models / "stage1"))
    cfg = GenerateConfig(num_candidates=4, num_inference_steps=2, width=WIDTH, height=HEIGHT, max_sequence_length=16)
    grids = spy_reference_grids(monkeypatch)
    assert generate_round(settings, "r1", cfg, progress=False).generated == 8

    # References kept their aspects: each at its own bucket of about the candidates' area, in slot order.
    wide, tall = (reference_size(*size, (WIDTH, HEIGHT), FACTOR) for size in (WIDE, TALL))
    assert wide[0] > wide[1] and tall[0] < tall[1]
    assert grids == [[(wide[1] // FACTOR, wide[0] // FACTOR), (tall[1] // FACTOR, tall[0] // FACTOR)]] * 2
    with session_scope(settings.db_url) as s:
        sizes = {(c.asset.width, c.asset.height) for c in s.scalars(select(Candidate))}
    assert sizes == {(WIDTH, HEIGHT)}

    with session_scope(settings.db_url) as s:
        users = [add_user(s, name, "password123", Role.annotator).id for name in ("ann", "bob", "cat")]
        scen = [(sc.id, [c.id for c in sorted(sc.candidates, key=lambda c: c.index)])
                for sc in s.scalars(select(Scenario).order_by(Scenario.id))]
    for sid, cands in scen:
        for u in users:
            judge(settings, sid, cands, u, [P, A, C, P], ranks={0: 1, 3: 2})

    dpo_cfg = DPOConfig(round="r1", output_dir=str(tmp_path / "dpo"), rank=4, lora_alpha=4, resolution=64,
                        max_sequence_length=16, max_steps=2, save_steps=2, report_to="none", learning_rate=1e-2,
                        beta=50.0, train_batch_size=2)
    trainer = DPOTrainer(dpo_cfg, settings)
    trainer._open_run(resume=False)
    trainer._load()
    assert trainer.data.grids == {(HEIGHT // FACTOR, WIDTH // FACTOR)}  # candidates at their own size
    assert all(sc.ref_grids == grids[0] for sc in trainer.data.scenarios.values())  # as generated
    lora = trainer._train(resume=False, progress=False)
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(DpoRun)).status is RunStatus.completed

    # The next round generates with Stage-1 + the DPO LoRA, at the same non-square size.
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r2", scenarios_file(tmp_path / "next", "r2", n=1), parent="r1",
                     spec=ModelSpec(str(models / "flux"), models / "stage1", lora))
    summary = generate_round(settings, "r2", GenerateConfig(**{**cfg.__dict__, "num_candidates": 2}), progress=False)
    assert summary.generated == 2
    with session_scope(settings.db_url) as s:
        rnd = s.scalar(select(Round).where(Round.name == "r2"))
        made = [c for sc in rnd.scenarios for c in sc.candidates]
        assert {(c.asset.width, c.asset.height) for c in made} == {(WIDTH, HEIGHT)}
        assert len({c.model_fingerprint for c in made}) == 1 and made[0].params["width"] == WIDTH
        first = s.scalars(select(Candidate).join(Scenario).join(Round).where(Round.name == "r1")).first()
        assert made[0].model_fingerprint != first.model_fingerprint  # the DPO LoRA is part of the model


def test_candidates_keep_their_size_unless_larger_than_the_resolution():
    assert candidate_size([(1360, 768)] * 3, 1024 * 1024, 16) == (1360, 768)  # not a square
    assert candidate_size([(96, 64), (96, 64), (64, 64)], 64 * 64, 16) == (64, 48)  # most common, scaled down
    assert candidate_size([(64, 64), (96, 64)], 128 * 128, 16) == (64, 64)  # a tie: the smaller


@pytest.mark.slow
def test_several_candidate_sizes_train_one_pair_a_batch(settings, tmp_path, models):
    """Pairs of one batch share one noise shape: a round of two candidate sizes is refused with batches of 2
    (or held-out chunks of 2) before anything trains, and trains with batches of 1."""
    judged_for_models(settings, tmp_path, models, scenarios=2, references=1, size=[(32, 32), (WIDTH, HEIGHT)])
    base = dict(round="r1", rank=4, lora_alpha=4, resolution=64, max_sequence_length=16, max_steps=2, save_steps=2,
                report_to="none", beta=50.0)
    with pytest.raises(DPOError, match=r"candidates of several sizes \(8x8, 12x8 tokens\).*train_batch_size = 1"):
        train_dpo(DPOConfig(**base, output_dir=str(tmp_path / "two"), train_batch_size=2), settings, progress=False)
    with pytest.raises(DPOError, match=r"several sizes .* held-out pairs .* eval_batch_size = 1"):
        train_dpo(DPOConfig(**base, output_dir=str(tmp_path / "eval"), train_batch_size=1, eval_split=0.5,
                            eval_steps=1, eval_batch_size=2), settings, progress=False)
    lora = train_dpo(DPOConfig(**base, output_dir=str(tmp_path / "one"), train_batch_size=1), settings,
                     progress=False)
    assert (lora / "pytorch_lora_weights.safetensors").exists()
