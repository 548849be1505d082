"""study generate on the tiny FLUX model: same seed in every arm, resumable, bytes that name no model."""

import numpy as np
from PIL import Image
from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.assets import asset_path
from storyloop.db.models import StudyImage
from storyloop.generation.run import GenerateConfig
from storyloop.studies.arms import parse_arms
from storyloop.studies.create import StudyOptions, create_study
from storyloop.studies.generate import generate_study, study_seed
from storyloop.studies.images import png_chunk_types
from tests.studies.conftest import SCENARIOS, folder_arm, make_round

CONFIG = GenerateConfig(num_inference_steps=2, height=32, width=32, max_sequence_length=16)
THREE = SCENARIOS[:3]


def images(url):
    with session_scope(url) as s:
        return {(im.arm_id, im.scenario_id, im.seed_index): (im.seed, im.asset.sha256, im.asset, im.model_fingerprint)
                for im in s.scalars(select(StudyImage))}


def test_generate_gives_every_model_arm_the_same_seeds_and_resumes(settings, tmp_path, models):
    make_round(settings, tmp_path / "src", scenarios=THREE)
    uno = folder_arm(tmp_path / "uno", [k for k, *_ in THREE], seeds=2)
    # "plain" samples without its references (scale 0): an arm that must draw other images from the same seeds
    arms = parse_arms([f"stage1=base={models / 'flux'},stage1={models / 'stage1'}",
                       f"plain=base={models / 'flux'},ref_scale=0", f"uno={uno}"])
    with session_scope(settings.db_url) as s:
        create_study(s, settings.store_dir, "st", arms, round_name="r1", options=StudyOptions(seeds=2))
    before = images(settings.db_url)
    assert len(before) == 3 * 2  # the folder arm's images, stored at create

    summary = generate_study(settings, "st", CONFIG, progress=False)
    assert (summary.generated, summary.skipped, summary.scenarios) == (2 * 3 * 2, 0, 3)
    assert set(summary.fingerprints) == {"stage1", "plain"}
    assert summary.fingerprints["stage1"] != summary.fingerprints["plain"]
    rows = images(settings.db_url)
    assert len(rows) == 3 * 3 * 2
    model_arms = {arm for (arm, _, _), (seed, *_) in rows.items() if seed is not None}
    assert len(model_arms) == 2
    with session_scope(settings.db_url) as s:
        from storyloop.db.models import Scenario, Study
        study = s.scalar(select(Study))
        keys = {sc.id: sc.key for sc in s.scalars(select(Scenario))}
        for (arm, sid, i), (seed, *_) in rows.items():
            if arm in model_arms:
                assert seed == study_seed(study, keys[sid], i)
    for sid in keys:  # same scenario and seed index: one seed across arms, different images across models
        for i in range(2):
            seeds = {rows[a, sid, i][0] for a in model_arms}
            assert len(seeds) == 1
            assert len({rows[a, sid, i][1] for a in model_arms}) == 2
        assert rows[min(model_arms), sid, 0][0] != rows[min(model_arms), sid, 1][0]
    for (arm, sid, i), (seed, sha, asset, fp) in rows.items():
        data = asset_path(settings.store_dir, asset).read_bytes()
        assert png_chunk_types(data) == ["IHDR", "IDAT", "IEND"]  # no text, EXIF, ICC: nothing names a model
        assert Image.open(asset_path(settings.store_dir, asset)).size == (32, 32)

    again = generate_study(settings, "st", CONFIG, progress=False)
    assert (again.generated, again.skipped) == (0, 2 * 3 * 2)
    assert images(settings.db_url).keys() == rows.keys()


def test_an_interrupted_study_completes_with_the_same_images(settings, tmp_path, models):
    make_round(settings, tmp_path / "src", scenarios=THREE[:2])
    arms = parse_arms([f"a=base={models / 'flux'},stage1={models / 'stage1'}", f"b=base={models / 'flux'}"])
    with session_scope(settings.db_url) as s:
        create_study(s, settings.store_dir, "st", arms, round_name="r1")
    generate_study(settings, "st", CONFIG, progress=False)
    full = {k: v[1] for k, v in images(settings.db_url).items()}
    with session_scope(settings.db_url) as s:  # lose half of them, as a killed run would
        for im in list(s.scalars(select(StudyImage).order_by(StudyImage.id)))[::2]:
            s.delete(im)
    resumed = generate_study(settings, "st", CONFIG, progress=False)
    assert (resumed.generated, resumed.skipped) == (2, 2)
    assert {k: v[1] for k, v in images(settings.db_url).items()} == full
    pixels = [np.asarray(Image.open(asset_path(settings.store_dir, v[2]))) for v in images(settings.db_url).values()]
    assert all(p.shape == (32, 32, 3) for p in pixels)


def test_a_lora_changed_since_the_study_was_created_is_refused_by_name(settings, tmp_path, models):
    import shutil

    import pytest

    from storyloop.generation.models import ModelError

    lora = shutil.copytree(models / "stage1", tmp_path / "lora")
    make_round(settings, tmp_path / "src", scenarios=THREE[:1])
    arms = parse_arms([f"a=base={models / 'flux'},stage1={lora}", f"b=base={models / 'flux'}"])
    with session_scope(settings.db_url) as s:
        create_study(s, settings.store_dir, "st", arms, round_name="r1")
    weights = next(lora.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b" ")  # any change to the file
    with pytest.raises(ModelError, match="changed since arm 'a' of study 'st' was created"):
        generate_study(settings, "st", CONFIG, progress=False)
    assert images(settings.db_url) == {}
