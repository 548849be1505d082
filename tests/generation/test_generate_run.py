"""`generate run` end to end on a tiny FLUX folder built in code: real loading, LoRA, GSA, DB, store."""

import json

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from storyloop.db import session_scope
from storyloop.db.assets import asset_path
from storyloop.db.models import Candidate
from storyloop.db.rounds import ModelSpec, RoundError, create_round
from storyloop.generation import run
from storyloop.generation.models import ModelError
from storyloop.generation.run import GenerateConfig, generate_round
from tests.conftest import make_image, save_tiny_models

WORDS = "a the red blue fox cat reads sleeps book in forest".split()
CONFIG = GenerateConfig(num_candidates=2, num_inference_steps=3, height=32, width=32, max_sequence_length=16)


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    """A saved tiny FLUX pipeline and a Stage-1 LoRA trained for it (random, non-zero B)."""
    return save_tiny_models(tmp_path_factory.mktemp("models"), WORDS)


@pytest.fixture
def round_with_refs(settings, tmp_path, flux_folder):
    src = tmp_path / "src"
    make_image(src / "ref.png", (20, 90, 200), size=(48, 40))
    rows = [{"id": f"s-{i}", "story_id": "s", "frame_index": i, "prompt": p, "references": ["ref.png"] * (i > 0)}
            for i, p in enumerate(["a red fox reads", "the fox sleeps in the forest"])]
    (src / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", src / "s.jsonl",
                     spec=ModelSpec(str(flux_folder / "flux"), flux_folder / "stage1"))
    return "r1"


def candidate_rows(url):
    with session_scope(url) as s:
        return [(c.scenario.key, c.index, c.seed, c.model_fingerprint, c.asset.width, c.params["num_inference_steps"])
                for c in s.scalars(select(Candidate).order_by(Candidate.scenario_id, Candidate.index))]


def take_candidates(settings) -> dict[tuple[str, int], tuple[int, np.ndarray, dict]]:
    """(seed, pixels, params) of every candidate by (scenario key, index), in order; then deletes them, so the
    round can be generated again with other settings."""
    with session_scope(settings.db_url) as s:
        rows = s.scalars(select(Candidate).order_by(Candidate.scenario_id, Candidate.index)).all()
        out = {(c.scenario.key, c.index): (c.seed, np.asarray(Image.open(asset_path(settings.store_dir, c.asset)),
                                                              dtype=int), c.params) for c in rows}
        s.query(Candidate).delete()
    return out


def test_generate_round_writes_candidates_and_resumes(settings, round_with_refs):
    summary = generate_round(settings, round_with_refs, CONFIG, progress=False)
    assert (summary.generated, summary.skipped) == (4, 0)
    rows = candidate_rows(settings.db_url)
    assert [(k, i) for k, i, *_ in rows] == [("s-0", 0), ("s-0", 1), ("s-1", 0), ("s-1", 1)]
    assert len({seed for _, _, seed, *_ in rows}) == 4
    assert {fp for *_, fp, _, _ in rows} == {summary.model_fingerprint}
    assert all(w == 32 and steps == 3 for *_, w, steps in rows)

    again = generate_round(settings, round_with_refs, CONFIG, progress=False)
    assert (again.generated, again.skipped) == (0, 4)
    more = generate_round(settings, round_with_refs, GenerateConfig(**{**CONFIG.__dict__, "num_candidates": 3}),
                          progress=False)
    assert more.generated == 2 and len(candidate_rows(settings.db_url)) == 6


def test_regenerating_a_round_reproduces_its_images(settings, round_with_refs, tmp_path):
    generate_round(settings, round_with_refs, CONFIG, progress=False)
    with session_scope(settings.db_url) as s:
        first = sorted(c.asset.sha256 for c in s.scalars(select(Candidate)))
        s.query(Candidate).delete()
    generate_round(settings, round_with_refs, CONFIG, progress=False)
    with session_scope(settings.db_url) as s:
        assert sorted(c.asset.sha256 for c in s.scalars(select(Candidate))) == first


def test_missing_model_folder_is_one_clear_error(settings, round_with_refs, tmp_path):
    with pytest.raises(ModelError, match="not a diffusers FLUX folder"):
        generate_round(settings, round_with_refs, CONFIG, model=str(tmp_path / "nowhere"), progress=False)
    assert candidate_rows(settings.db_url) == []


def test_lora_for_another_base_is_refused(settings, round_with_refs, flux_folder):
    with pytest.raises(ModelError, match="trained on base"):
        generate_round(settings, round_with_refs, CONFIG, model=str(flux_folder / "other"), progress=False)
    assert candidate_rows(settings.db_url) == []


def test_unreadable_reference_is_refused_before_anything_is_generated(settings, round_with_refs):
    for f in settings.store_dir.rglob("*.png"):
        f.write_bytes(b"garbage")
    with pytest.raises(RoundError, match="scenario 's-1': reference 0 unreadable"):
        generate_round(settings, round_with_refs, CONFIG, progress=False)
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(Candidate)) == 0


def test_batched_candidates_are_the_images_made_one_at_a_time(settings, round_with_refs):
    """Batching changes speed, not images: same seeds, same pixels (up to float rounding in the last bit)."""
    three = {**CONFIG.__dict__, "num_candidates": 3}
    generate_round(settings, round_with_refs, GenerateConfig(**{**three, "batch_size": 1}), progress=False)
    single = take_candidates(settings)
    generate_round(settings, round_with_refs, GenerateConfig(**{**three, "batch_size": 2}), progress=False)
    batched = take_candidates(settings)
    assert [seed for seed, *_ in single.values()] == [seed for seed, *_ in batched.values()] and len(single) == 6
    assert max(np.abs(single[k][1] - batched[k][1]).max() for k in single) <= 1


def test_reference_guidance_scales_cycle_over_candidates(settings, round_with_refs):
    """Candidate k gets scale k mod len; a scenario without references is sampled as usual."""
    generate_round(settings, round_with_refs, CONFIG, progress=False)
    plain = take_candidates(settings)
    generate_round(settings, round_with_refs, GenerateConfig(**{**CONFIG.__dict__,
                                                                "reference_guidance_scales": (1.0, 4.0)}),
                   progress=False)
    mixed = take_candidates(settings)
    assert {k: params["reference_guidance_scale"] for k, (_, _, params) in mixed.items()} == {
        ("s-0", 0): 1.0, ("s-0", 1): 1.0, ("s-1", 0): 1.0, ("s-1", 1): 4.0}
    same = {k for k in plain if np.abs(plain[k][1] - mixed[k][1]).max() <= 1}  # batching may move the last bit
    assert same == {("s-0", 0), ("s-0", 1), ("s-1", 0)}  # only the guided candidate changed


@pytest.mark.parametrize("scales, passes", [((0.0,), 0), ((0.0, 2.0), 1), ((1.0,), 1)])
def test_reference_pass_only_when_a_candidate_reads_it(settings, round_with_refs, monkeypatch, scales, passes):
    """At s = 0 a candidate is sampled without its references, so a scenario whose candidates are all at
    s = 0 writes no reference K/V; otherwise one pass serves all of them."""
    written = []
    real = run.write_reference_cache
    monkeypatch.setattr(run, "write_reference_cache", lambda *a, **k: written.append(1) or real(*a, **k))
    generate_round(settings, round_with_refs, GenerateConfig(**{**CONFIG.__dict__,
                                                                "reference_guidance_scales": scales}),
                   progress=False)
    assert len(written) == passes  # s-0 has no references; s-1 has one


@pytest.mark.parametrize("scales", [(), (1.0, -2.0)])
def test_bad_reference_guidance_scales_are_refused(scales):
    with pytest.raises(ValueError, match="reference_guidance_scales"):
        GenerateConfig(reference_guidance_scales=scales)


def test_a_resumed_round_gives_new_candidates_their_own_scale(settings, round_with_refs):
    mixed = {**CONFIG.__dict__, "reference_guidance_scales": (1.0, 3.0)}
    generate_round(settings, round_with_refs, GenerateConfig(**mixed), progress=False)
    generate_round(settings, round_with_refs, GenerateConfig(**{**mixed, "num_candidates": 4}), progress=False)
    with session_scope(settings.db_url) as s:
        scales = [c.params["reference_guidance_scale"] for c in
                  s.scalars(select(Candidate).order_by(Candidate.scenario_id, Candidate.index))]
    assert scales == [1.0] * 4 + [1.0, 3.0, 1.0, 3.0]  # s-0 has no references; s-1 cycles
