"""Characters localised by a zero-shot, text-prompted detector (GroundingDINO in the paper; OWL-ViT/OWLv2 too).

Any model that transformers' AutoModelForZeroShotObjectDetection loads works; the processor's
`post_process_grounded_object_detection` turns its outputs into boxes in pixels.
"""

from __future__ import annotations

import inspect

from PIL import Image

from storyloop.data.models import DataModelError, load_pretrained, pick_device


def query_labels(query: str) -> list[str]:
    """"a person. a cartoon character." -> ["a person", "a cartoon character"] (GroundingDINO's dot-separated
    form; OWL-ViT takes the list)."""
    return [q.strip() for q in query.split(".") if q.strip()]


class Detector:
    """Boxes [x0, y0, x1, y1] in pixels with scores, per image, best first."""

    def __init__(self, spec: str, query: str, box_threshold: float, text_threshold: float = 0.25,
                 device: str = "auto", stage: str = "detections"):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.labels = query_labels(query)
        if not self.labels:
            raise DataModelError(f"{stage}: the detector's query is empty: name what to find, e.g. 'a character.'")
        self.device = pick_device(device)
        self.processor = load_pretrained(AutoProcessor, spec, stage)
        self.model = load_pretrained(AutoModelForZeroShotObjectDetection, spec, stage).to(self.device).eval()
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        params = inspect.signature(self.processor.post_process_grounded_object_detection).parameters
        self._grounded = "text_threshold" in params  # GroundingDINO also thresholds the matched words

    def __call__(self, images: list[Image.Image]) -> list[list[dict]]:
        import torch

        text = [list(self.labels) for _ in images]
        inputs = self.processor(images=images, text=text, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        kwargs = {"threshold": self.box_threshold, "target_sizes": [(im.height, im.width) for im in images]}
        if self._grounded:
            kwargs.update(input_ids=inputs["input_ids"], text_threshold=self.text_threshold)
        results = self.processor.post_process_grounded_object_detection(outputs, **kwargs)
        out = []
        for image, res in zip(images, results, strict=True):
            found = []
            for box, score in zip(res["boxes"].tolist(), res["scores"].tolist(), strict=True):
                x0, y0 = max(0.0, box[0]), max(0.0, box[1])
                x1, y1 = min(float(image.width), box[2]), min(float(image.height), box[3])
                if x1 - x0 >= 1 and y1 - y0 >= 1:
                    found.append({"box": [round(v, 1) for v in (x0, y0, x1, y1)], "score": round(float(score), 4)})
            out.append(sorted(found, key=lambda d: (-d["score"], d["box"])))
        return out


def crop(image: Image.Image, box: list[float]) -> Image.Image:
    x0, y0, x1, y1 = (round(v) for v in box)
    return image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
