"""Stage-1 training on a tiny FLUX folder: it trains, saves a loadable LoRA, and resumes exactly."""

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from storyloop.generation.checkpoints import ResumeError
from storyloop.generation.gsa import POSITION_SCHEME
from storyloop.generation.lora import check_lora
from storyloop.generation.models import ModelError, base_identity, load_flux
from storyloop.generation.config import Stage1Config
from storyloop.generation.stage1 import train_stage1
from storyloop.generation.tiny import tiny_flux_pipeline
from tests.conftest import write_groups_dataset

WORDS = "a the red blue green fox cat owl reads sleeps".split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage1")
    tiny_flux_pipeline(WORDS).save_pretrained(root / "flux")
    write_groups_dataset(root / "data")
    return root


def config(root, out, **kw):
    base = dict(model=str(root / "flux"), dataset=str(root / "data"), output_dir=str(out), rank=4, lora_alpha=4,
                resolution=32, max_sequence_length=16, max_train_steps=4, checkpointing_steps=2,
                report_to="none", learning_rate=1e-3)
    return Stage1Config(**{**base, **kw})


def test_stage1_trains_and_saves_a_lora_for_its_base(setup, tmp_path):
    lora = train_stage1(config(setup, tmp_path / "a", report_to="tensorboard"), progress=False)
    meta = check_lora(lora, base_identity(str(setup / "flux")), "stage1")
    assert (meta.rank, meta.steps, meta.position_scheme) == (4, 4, POSITION_SCHEME)
    weights = load_file(lora / "pytorch_lora_weights.safetensors")
    assert any("single_transformer_blocks" in k for k in weights) and any("ff.net" in k for k in weights)
    assert not any(k.startswith("transformer.proj_out") for k in weights)  # the final projection is not adapted
    assert all(k.startswith("transformer.") for k in weights)
    assert max(v.abs().max() for k, v in weights.items() if "lora_B" in k) > 0  # it learned something
    assert list((tmp_path / "a" / "logs").rglob("events.out.tfevents*"))  # tensorboard, offline
    pipe = load_flux(str(setup / "flux"))
    pipe.load_lora_weights(str(lora), adapter_name="stage1")  # diffusers' own loader takes it


def test_resume_after_a_kill_continues_exactly(setup, tmp_path):
    straight = train_stage1(config(setup, tmp_path / "straight"), progress=False)
    # "Killed" after step 2: a run whose last checkpoint is step 2, then resumed to the end.
    train_stage1(config(setup, tmp_path / "resumed", max_train_steps=2), progress=False)
    resumed = train_stage1(config(setup, tmp_path / "resumed"), resume=True, progress=False)
    a = load_file(straight / "pytorch_lora_weights.safetensors")
    b = load_file(resumed / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_caching_encodes_each_image_once(setup, tmp_path):
    train_stage1(config(setup, tmp_path / "c", max_train_steps=1), progress=False)
    cached = sorted(p.name for p in (tmp_path / "c" / "cache").iterdir())
    assert len(cached) == 9 + 3 + 1  # images, distinct captions, the empty prompt
    train_stage1(config(setup, tmp_path / "c", max_train_steps=1), progress=False)
    assert sorted(p.name for p in (tmp_path / "c" / "cache").iterdir()) == cached


def dataset_sha256(lora):
    extra = json.loads((lora / "storyloop_lora.json").read_text())["extra"]
    assert extra["dataset_images"] == 9
    return extra["dataset_sha256"]


def test_the_lora_records_its_data_and_resume_refuses_other_data(setup, tmp_path):
    """The same content anywhere gives the same fingerprint; one changed pixel gives another."""
    copy = tmp_path / "copy"
    shutil.copytree(setup / "data", copy)
    first = dataset_sha256(train_stage1(config(setup, tmp_path / "a", max_train_steps=2), progress=False))
    same = dataset_sha256(train_stage1(config(setup, tmp_path / "b", dataset=str(copy), max_train_steps=2),
                                       progress=False))
    assert first == same
    img = Image.open(copy / "fox0.png")
    img.putpixel((0, 0), (0, 0, 0))
    img.save(copy / "fox0.png")
    with pytest.raises(ResumeError, match="trained on other data"):
        train_stage1(config(setup, tmp_path / "b", dataset=str(copy), max_train_steps=4), resume=True,
                     progress=False)
    changed = dataset_sha256(train_stage1(config(setup, tmp_path / "c", dataset=str(copy), max_train_steps=2),
                                          progress=False))
    assert changed != first


def test_a_run_can_start_from_a_stage1_lora(setup, tmp_path):
    """init_lora fine-tunes: at learning rate 0 the saved LoRA is the one it started from, to the bit; trained on,
    both its factors move; a LoRA of another rank is refused."""
    first = train_stage1(config(setup, tmp_path / "first"), progress=False)
    start = load_file(first / "pytorch_lora_weights.safetensors")
    kept = train_stage1(config(setup, tmp_path / "kept", init_lora=str(first), learning_rate=0.0,
                               adam_weight_decay=0.0), progress=False)
    assert all(torch.equal(start[k], v) for k, v in load_file(kept / "pytorch_lora_weights.safetensors").items())
    on = load_file(train_stage1(config(setup, tmp_path / "on", init_lora=str(first)), progress=False)
                   / "pytorch_lora_weights.safetensors")
    assert on.keys() == start.keys()
    for factor in ("lora_A", "lora_B"):
        assert not all(torch.equal(start[k], on[k]) for k in on if factor in k)
    with pytest.raises(ModelError, match="rank 4 and alpha 4, but rank = 8"):
        train_stage1(config(setup, tmp_path / "rank", init_lora=str(first), rank=8), progress=False)


def test_bad_dataset_and_config_errors_are_clear(setup, tmp_path):
    with pytest.raises(ModelError, match="no group has 5 images"):
        train_stage1(config(setup, tmp_path / "d", num_references=4), progress=False)
    with pytest.raises(ModelError, match="no metadata.jsonl"):
        train_stage1(config(setup, tmp_path / "e", dataset=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="caption_dropout"):
        config(setup, tmp_path, caption_dropout=1.5)


# -- images of many sizes: aspect-ratio buckets ---------------------------------------------------------

MIXED = {"fox": [(48, 32), (32, 32), (24, 40), (40, 28)], "cat": [(32, 32), (32, 32), (32, 32)],
         "owl": [(24, 44), (48, 32), (30, 34)]}  # pixels; with resolution 32 and the tiny VAE's factor 4


@pytest.fixture(scope="module")
def mixed_setup(tmp_path_factory, setup):
    """(the tiny model's root, a dataset folder of images of many sizes)"""
    data = tmp_path_factory.mktemp("stage1-mixed") / "data"
    data.mkdir()
    rows = []
    for g, (animal, sizes) in enumerate(MIXED.items()):
        for f, (w, h) in enumerate(sizes):
            img = Image.new("RGB", (w, h), (240, 240, 240))
            img.paste((30 * f, 90 * g, 200 - 30 * f), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
            img.save(data / f"{animal}{f}.png")
            rows.append({"group": animal, "image": f"{animal}{f}.png", "caption": f"a {animal} sleeps"})
    (data / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return setup, data


def mixed_config(mixed, out, **kw):
    root, data = mixed
    return config(root, out, **{"dataset": str(data), "train_batch_size": 2, **kw})


@pytest.mark.slow
def test_stage1_trains_images_of_many_sizes_in_buckets_and_resumes_exactly(mixed_setup, tmp_path):
    straight = train_stage1(mixed_config(mixed_setup, tmp_path / "straight"), progress=False)
    extra = json.loads((straight / "storyloop_lora.json").read_text())["extra"]
    # 48x32 and 40x28 -> 36x28; 24x40 and 24x44 -> 24x44; 30x34 and the squares -> 32x32
    assert extra["buckets"] == {"24x44": 2, "32x32": 5, "36x28": 3}
    assert extra["config"]["aspect_buckets"] is True
    weights = load_file(straight / "pytorch_lora_weights.safetensors")
    assert max(v.abs().max() for k, v in weights.items() if "lora_B" in k) > 0
    cached = len(list((tmp_path / "straight" / "cache").iterdir()))
    assert cached == 10 + 3 + 1  # every image once, at its own bucket; captions; the empty prompt

    train_stage1(mixed_config(mixed_setup, tmp_path / "resumed", max_train_steps=2), progress=False)
    resumed = train_stage1(mixed_config(mixed_setup, tmp_path / "resumed"), resume=True, progress=False)
    again = load_file(resumed / "pytorch_lora_weights.safetensors")
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)


@pytest.mark.slow
def test_without_buckets_every_image_is_a_square_crop(mixed_setup, tmp_path):
    lora = train_stage1(mixed_config(mixed_setup, tmp_path / "sq", aspect_buckets=False, max_train_steps=1),
                        progress=False)
    assert json.loads((lora / "storyloop_lora.json").read_text())["extra"]["buckets"] == {"32x32": 10}


def test_the_encoded_dataset_reads_the_cache_files_instead_of_holding_copies(setup, tmp_path):
    from storyloop.generation.stage1 import encode_dataset
    from tests.generation.test_encoding_cache import backed_by

    cfg = config(setup, tmp_path / "m")
    pipe = load_flux(cfg.model)
    encode_dataset(pipe, cfg, tmp_path / "m" / "cache")  # fills the cache
    data = encode_dataset(pipe, cfg, tmp_path / "m" / "cache")  # reads it
    files = list((tmp_path / "m" / "cache").iterdir())
    rows = [data.latents[0], data.captions[0].prompt_embeds, data.captions[-1].pooled]
    assert all(any(backed_by(t, f) for f in files) for t in rows)
