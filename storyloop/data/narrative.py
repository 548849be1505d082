"""The semantic filter of section 3.2: how likely a page is a narrative illustration, not a cover, preface or
layout page.

Two kinds of model give the score, both through transformers' Auto classes:
- zero-shot: a CLIP-like model (AutoModel + AutoProcessor) compares the page with two prompts; the score is
  the narrative prompt's probability under a softmax over the two prompts' logits;
- classifier: a fine-tuned image classifier (AutoModelForImageClassification), the paper's choice; the score
  is the probability of the label that means narrative.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from storyloop.data.cache import StageCache, content_key
from storyloop.data.models import (
    DataModelError,
    load_pretrained,
    model_identity,
    pick_device,
)

STAGE = "narrative"


def resolve_kind(spec: str, kind: str = "auto") -> str:
    """`auto` reads the model's config: an ...ForImageClassification is a classifier, a model with both a text
    and a vision tower is zero-shot."""
    if kind != "auto":
        return kind
    from transformers import AutoConfig

    config = load_pretrained(AutoConfig, spec, STAGE)
    if any(a.endswith("ForImageClassification") for a in (config.architectures or [])):
        return "classifier"
    if getattr(config, "text_config", None) is not None and getattr(config, "vision_config", None) is not None:
        return "zero-shot"
    raise DataModelError(f"{STAGE}: {spec!r} is neither an image classifier nor a text-image model like CLIP; "
                         "set narrative_kind")


class NarrativeScorer:
    """Scores a batch of pages in [0, 1]: the probability that each is a narrative page."""

    def __init__(self, spec: str, kind: str = "auto", prompts: tuple[str, str] = ("", ""),
                 label: str = "narrative", device: str = "auto"):
        self.kind = resolve_kind(spec, kind)
        self.device = pick_device(device)
        self.prompts = list(prompts)
        if self.kind == "zero-shot":
            from transformers import AutoModel, AutoProcessor

            self.processor = load_pretrained(AutoProcessor, spec, STAGE)
            self.model = load_pretrained(AutoModel, spec, STAGE)
            if not all(self.prompts):
                raise DataModelError(f"{STAGE}: zero-shot scoring needs both prompts")
        else:
            from transformers import AutoImageProcessor, AutoModelForImageClassification

            self.processor = load_pretrained(AutoImageProcessor, spec, STAGE)
            self.model = load_pretrained(AutoModelForImageClassification, spec, STAGE)
            labels = {str(v): int(k) for k, v in self.model.config.id2label.items()}
            if label not in labels:
                raise DataModelError(f"{STAGE}: {spec!r} has no label {label!r} (its labels: "
                                     f"{', '.join(sorted(labels))}); set narrative_label")
            self.index = labels[label]
        self.model = self.model.to(self.device).eval()
        # SigLIP was trained on prompts padded to the full length; CLIP pads to the longest prompt.
        self.padding = "max_length" if "siglip" in getattr(self.model.config, "model_type", "") else True

    def __call__(self, images: list[Image.Image]) -> list[float]:
        import torch

        with torch.inference_mode():
            if self.kind == "zero-shot":
                inputs = self.processor(text=self.prompts, images=images, return_tensors="pt",
                                        padding=self.padding).to(self.device)
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
                probs = self.model(**inputs).logits_per_image.float().softmax(-1)[:, 0]
            else:
                inputs = self.processor(images=images, return_tensors="pt").to(self.device)
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
                probs = self.model(**inputs).logits.float().softmax(-1)[:, self.index]
        return [float(p) for p in probs.cpu()]


def score_pages(images: dict[str, Path], *, model: str, kind: str, prompts: tuple[str, str], label: str,
                device: str, batch_size: int, cache: StageCache, progress: bool = True) -> tuple[dict[str, float], int]:
    """Narrative scores for images {key: PNG path}, each cached by image and model (the model is loaded
    only when some score is missing). Returns (scores by key, how many were computed now)."""
    from tqdm.auto import tqdm

    identity = content_key(STAGE, model_identity(model), kind, list(prompts), label)
    scores: dict[str, float] = {}
    todo = []
    for key in images:
        cached = cache.get(STAGE, content_key(key, identity))
        if cached is None:
            todo.append(key)
        else:
            scores[key] = float(cached)
    if todo:
        scorer = NarrativeScorer(model, kind, prompts, label, device)
        with tqdm(total=len(todo), desc="narrative", unit="page", disable=not progress, leave=False) as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                pages = [Image.open(images[k]).convert("RGB") for k in batch]
                for key, score in zip(batch, scorer(pages), strict=True):
                    cache.put(STAGE, content_key(key, identity), score)
                    scores[key] = score
                bar.update(len(batch))
    return scores, len(todo)
