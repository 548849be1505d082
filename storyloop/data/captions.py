"""Captions for the dataset's images: an image-to-text model at a path or hub id, or a captions file.

The paper captions with Florence-2-large in its detailed-captioning mode (section 3.4). Any transformers
model that `AutoModelForImageTextToText` loads works (BLIP, GIT, Florence-2, ...); for Florence-2 the task
token is the prompt, for the others there is none. Generation is greedy, so captions are deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from storyloop.data.cache import StageCache, content_key
from storyloop.data.dataset import Frame
from storyloop.data.models import (
    DataModelError,
    load_pretrained,
    model_identity,
    pick_device,
)
from storyloop.data.report import Report

FLORENCE_TASK = "<DETAILED_CAPTION>"  # Florence-2's task tokens: <CAPTION>, <DETAILED_CAPTION>, <MORE_DETAILED_CAPTION>


class Captioner:
    """Batched greedy captioning with one image-to-text model."""

    def __init__(self, spec: str, device: str = "auto", max_new_tokens: int = 77, task: str = FLORENCE_TASK):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = pick_device(device)
        self.processor = load_pretrained(AutoProcessor, spec, "captions")
        self.model = load_pretrained(AutoModelForImageTextToText, spec, "captions").to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        self.prompt = task if getattr(self.model.config, "model_type", "") == "florence2" else None

    def __call__(self, images: list[Image.Image]) -> list[str]:
        import torch

        kwargs = {"images": images, "return_tensors": "pt"}
        if self.prompt is not None:
            kwargs["text"] = [self.prompt] * len(images)
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and out.shape[1] > prompt_ids.shape[1] \
                and torch.equal(out[:, :prompt_ids.shape[1]], prompt_ids):  # a decoder-only model repeats its prompt
            out = out[:, prompt_ids.shape[1]:]
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


def read_captions_file(path: Path) -> dict[str, str]:
    """Captions from a file: `.json` holds one object {key: caption}; anything else is JSON lines of
    {"key": ..., "caption": ...}. A key is an image's source as metadata.jsonl's `source` column writes it
    (e.g. "fox.pdf#page=3") or the sha256 of the image's PNG. Errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataModelError(f"{path}: cannot read captions file ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataModelError(f"{path}: not JSON ({exc})") from None
        if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
            raise DataModelError(f"{path}: expected one object of key -> caption text")
        return {str(k): v for k, v in obj.items()}
    captions: dict[str, str] = {}
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key, caption = row["key"], row["caption"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataModelError(f"{path}: line {no}: needs {{\"key\": ..., \"caption\": ...}} ({exc})") from None
        if not isinstance(caption, str):
            raise DataModelError(f"{path}: line {no}: caption must be text")
        captions[str(key)] = caption
    return captions


def caption_frames(frames: list[Frame], *, captioner: str = "", captions_file: str = "", device: str = "auto",
                   batch_size: int = 8, max_new_tokens: int = 77, cache: StageCache, report: Report,
                   progress: bool = True) -> None:
    """Fill `frame.caption` for every frame: from `captions_file` when given (a frame it lacks is an error
    that names the frame), else from the `captioner` model (cached per image and model), else leave them
    empty. Counts the captioned frames as the `captions` stage."""
    from tqdm.auto import tqdm

    if captions_file:
        table = read_captions_file(Path(captions_file))
        missing = [f.source for f in frames if f.source not in table and f.key not in table]
        if missing:
            raise DataModelError(f"{captions_file}: no caption for {len(missing)} image(s), first "
                                 f"{missing[0]!r} (key by source or by the image's sha256)")
        for f in frames:
            f.caption = table.get(f.source, table.get(f.key, ""))
    elif captioner:
        identity = content_key(model_identity(captioner), FLORENCE_TASK, max_new_tokens)
        todo = [f for f in frames if cache.get("captions", content_key(f.key, identity)) is None]
        if todo:
            model = Captioner(captioner, device=device, max_new_tokens=max_new_tokens)
            bar = tqdm(total=len(todo), desc="captions", unit="img", disable=not progress, leave=False)
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                images = [Image.open(f.image).convert("RGB") for f in batch]
                for f, text in zip(batch, model(images), strict=True):
                    cache.put("captions", content_key(f.key, identity), text)
                bar.update(len(batch))
            bar.close()
        for f in frames:
            f.caption = cache.get("captions", content_key(f.key, identity))
    report.count("captions", sum(1 for f in frames if f.caption))
