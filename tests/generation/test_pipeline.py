"""StoryFluxPipeline on a tiny FLUX folder built in code: the images `generate run` draws, diffusers' stock
sampling without references, and storyloop's LoRA checks through `load_lora_weights`."""

import json

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from PIL import Image
from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.assets import ImageError, asset_path
from storyloop.db.models import Candidate
from storyloop.db.rounds import ModelSpec, create_round
from storyloop.generation import run
from storyloop.generation.gsa import POSITION_SCHEME, has_gsa
from storyloop.generation.lora import lora_config, save_lora
from storyloop.generation.models import LoraMeta, ModelError, base_fingerprint, latent_grid, load_flux
from storyloop.generation.pipeline import StoryFluxPipeline
from storyloop.generation.run import GenerateConfig, generate_round
from storyloop.generation.sampling import initial_noise
from storyloop.hashing import sha256_path
from tests.conftest import make_image, save_tiny_models

WORDS = "a the red blue fox cat reads sleeps book in forest".split()
SIZE = dict(height=32, width=32)
STEPS = 2
SEQ = 16  # T5 tokens


def save_live_lora(root, name: str, kind: str, seed: int, extra: dict | None = None):
    """A LoRA for root/flux whose A and B are both random (peft's "gaussian" init leaves B at zero, which
    would make the LoRA a no-op)."""
    pipe = load_flux(str(root / "flux"))
    torch.manual_seed(seed)
    pipe.transformer.add_adapter(lora_config(4, 4, init="gaussian"), adapter_name=kind)
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            if f"lora_B.{kind}" in n:
                p.normal_(0, 0.05)
    return save_lora(pipe.transformer, kind, root / name,
                     LoraMeta(kind, base_fingerprint(str(root / "flux")), POSITION_SCHEME, 4, 4, 1, extra=extra))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """root/flux, root/other (another base), root/stage1, root/dpo over it, root/dpo-elsewhere over another."""
    root = save_tiny_models(tmp_path_factory.mktemp("models"), WORDS)
    save_live_lora(root, "stage1", "stage1", 3)
    save_live_lora(root, "dpo", "dpo", 5, {"stage1_sha256": sha256_path(root / "stage1")})
    save_live_lora(root, "dpo-elsewhere", "dpo", 6, {"stage1_sha256": "0" * 64})
    return root


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Two reference images of their own sizes (neither the target's)."""
    src = tmp_path_factory.mktemp("refs")
    return make_image(src / "mia.png", (20, 90, 200), size=(48, 40)), make_image(src / "tom.png", (200, 60, 20),
                                                                                 size=(32, 48))


def story_pipe(models, *loras) -> StoryFluxPipeline:
    pipe = StoryFluxPipeline.from_pretrained(models / "flux", torch_dtype=torch.float32)
    for lora in loras:
        pipe.load_lora_weights(models / lora)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def draw(pipe, seeds, **kw) -> np.ndarray:
    kw = {"generator": [torch.Generator().manual_seed(s) for s in seeds], "num_images_per_prompt": len(seeds), **kw}
    out = pipe(kw.pop("prompt", "a red fox reads"), num_inference_steps=STEPS, max_sequence_length=SEQ, **SIZE, **kw)
    return np.stack([np.asarray(im) for im in out.images])


@pytest.mark.parametrize("loras", [("stage1",), ("stage1", "dpo")])
def test_the_same_seed_draws_the_image_generate_run_draws(settings, tmp_path, models, refs, loras):
    """A round's candidates, redrawn from their seeds through the pipeline: the same pixels, references given
    as the round's character mapping (and with a DPO LoRA: references through the Stage-1 model only)."""
    mia, tom = refs
    references = {"Mia": [str(mia)], "Tom": [str(tom), str(mia)]}
    (tmp_path / "s.jsonl").write_text(json.dumps({"id": "s-0", "story_id": "s", "frame_index": 0,
                                                  "prompt": "the fox sleeps in the forest", "references": references}))
    dpo = models / "dpo" if "dpo" in loras else None
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "r1", tmp_path / "s.jsonl",
                     spec=ModelSpec(str(models / "flux"), models / "stage1", dpo))
    generate_round(settings, "r1", GenerateConfig(num_candidates=2, num_inference_steps=STEPS, **SIZE,
                                                  max_sequence_length=SEQ, batch_size=2), progress=False)
    with session_scope(settings.db_url) as s:
        rows = s.scalars(select(Candidate).order_by(Candidate.index)).all()
        seeds = [c.seed for c in rows]
        made = np.stack([np.asarray(Image.open(asset_path(settings.store_dir, c.asset))) for c in rows])

    pipe = story_pipe(models, *loras)
    assert pipe.transformer.active_adapters() == list(loras) and has_gsa(pipe.transformer)
    drawn = draw(pipe, seeds, prompt="the fox sleeps in the forest", references=references)
    assert drawn.shape == made.shape == (2, 32, 32, 3)
    assert np.array_equal(drawn, made)
    assert not np.array_equal(drawn[0], drawn[1])  # two seeds, two images


def test_each_lora_changes_the_images(models, refs):
    """(So that the test above can fail: each adapter is on while the targets are denoised.)"""
    images = [draw(story_pipe(models, *loras), [1], references=list(refs))
              for loras in ((), ("stage1",), ("stage1", "dpo"))]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])


def test_references_as_a_mapping_are_the_flat_list_in_slot_order(models, refs):
    mia, tom = refs
    pipe = story_pipe(models, "stage1")
    named = draw(pipe, [4], references={"Mia": [mia], "Tom": [tom, mia]})
    assert np.array_equal(named, draw(pipe, [4], references=[mia, tom, mia]))
    assert np.array_equal(named, draw(pipe, [4], references=[Image.open(p) for p in (mia, tom, mia)]))
    assert not np.array_equal(named, draw(pipe, [4], references=[tom, mia, mia]))  # the order is the slots'


def test_references_are_written_once_per_call(models, refs, monkeypatch):
    written = []
    real = run.write_reference_cache
    monkeypatch.setattr(run, "write_reference_cache", lambda *a, **k: written.append(1) or real(*a, **k))
    pipe = story_pipe(models, "stage1")
    draw(pipe, [1, 2, 3], references=list(refs))
    assert written == [1]
    draw(pipe, [1], references=list(refs), reference_guidance_scale=0.0)  # s = 0 reads no references
    draw(pipe, [1])
    assert written == [1]


def test_a_prompt_without_references_is_stock_flux_sampling(models):
    """diffusers' own FluxPipeline, handed the noise that seed 7 draws, gives the same latents."""
    pipe = story_pipe(models)
    ours = pipe("a blue cat", num_inference_steps=STEPS, max_sequence_length=SEQ, output_type="latent",
                generator=torch.Generator().manual_seed(7), **SIZE).images
    stock = FluxPipeline.from_pretrained(models / "flux")
    stock.set_progress_bar_config(disable=True)
    h, w = latent_grid(stock, **SIZE)
    noise = initial_noise([7], h * w, stock.transformer.config.in_channels)
    theirs = stock("a blue cat", num_inference_steps=STEPS, max_sequence_length=SEQ, output_type="latent",
                   latents=noise, **SIZE).images
    torch.testing.assert_close(ours, theirs)
    assert ours.abs().max() > 0.1  # a real image's latents, not a degenerate zero


def test_one_generator_draws_its_images_in_turn(models):
    pipe = story_pipe(models)
    two = draw(pipe, [], generator=torch.Generator().manual_seed(9), num_images_per_prompt=2)
    assert np.array_equal(two[:1], draw(pipe, [9]))  # the first image is seed 9's
    assert not np.array_equal(two[0], two[1])
    with pytest.raises(ValueError, match="3 generators for 2 images"):
        pipe("a fox", generator=[torch.Generator()] * 3, num_images_per_prompt=2, **SIZE)


def test_lora_of_another_kind_or_base_is_refused(models):
    pipe = story_pipe(models)
    with pytest.raises(ModelError, match="a storyloop stage1 LoRA loads as adapter 'stage1', not 'dpo'"):
        pipe.load_lora_weights(models / "stage1", adapter_name="dpo")
    with pytest.raises(ModelError, match="trained on top of another Stage-1 LoRA than this pipeline"):
        pipe.load_lora_weights(models / "dpo")  # its Stage-1 LoRA is not loaded
    with pytest.raises(ModelError, match="not a storyloop LoRA folder"):
        pipe.load_lora_weights(models / "flux")
    with pytest.raises(ModelError, match="no such LoRA folder"):
        pipe.load_lora_weights(models / "nowhere")
    assert pipe.storyloop_loras == {} and not getattr(pipe.transformer, "peft_config", None)  # nothing loaded

    pipe.load_lora_weights(models / "stage1")
    with pytest.raises(ModelError, match="trained on top of another Stage-1 LoRA"):
        pipe.load_lora_weights(models / "dpo-elsewhere")
    with pytest.raises(ModelError, match="already loaded"):
        pipe.load_lora_weights(models / "stage1")
    assert list(pipe.storyloop_loras) == ["stage1"]

    other = StoryFluxPipeline.from_pretrained(models / "other")
    with pytest.raises(ModelError, match="trained on base"):
        other.load_lora_weights(models / "stage1")


def test_a_missing_reference_file_is_named(models, refs, tmp_path):
    pipe = story_pipe(models)
    with pytest.raises(ImageError, match=r"reference of 'Tom' .*gone\.png: no such file"):
        pipe("a fox", references={"Mia": [refs[0]], "Tom": [tmp_path / "gone.png"]}, **SIZE)


def test_a_missing_model_folder_is_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not a diffusers FLUX folder"):
        StoryFluxPipeline.from_pretrained(tmp_path / "nowhere")


def test_a_kind_that_is_not_storyloops_is_refused(models, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    LoraMeta("style", base_fingerprint(str(models / "flux")), POSITION_SCHEME, 4, 4, 1).dump(folder)
    with pytest.raises(ModelError, match="'style' LoRA is none of storyloop's kinds"):
        story_pipe(models).load_lora_weights(folder)
