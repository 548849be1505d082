"""Who is who: crop embeddings -> a cosine-similarity graph -> Louvain communities -> verified clusters.

The paper's coarse-to-fine clustering (section 3.3): DINOv2 features and Louvain give candidate groups;
a VLM (Qwen-VL) then drops the crops that do not show the cluster's character. The embedder and the
verifier are pluggable: `color-histogram` needs no model (so clustering runs and is tested anywhere), and a
verifier may be any `module:function(crop, reference) -> bool`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from storyloop.data.models import load_pretrained, pick_device
from storyloop.data.plugins import is_plugin, load_plugin

COLOR_HISTOGRAM = "color-histogram"
HSV_BINS = (12, 4, 4)  # hue, saturation, value


def color_histogram(image: Image.Image) -> np.ndarray:
    """A joint HSV histogram, square-rooted (so cosine similarity is the Bhattacharyya coefficient and a
    shared background does not swamp the character) and L2-normalised."""
    hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.int64)
    idx = [np.minimum(hsv[..., c] * bins // 256, bins - 1) for c, bins in enumerate(HSV_BINS)]
    flat = (idx[0] * HSV_BINS[1] + idx[1]) * HSV_BINS[2] + idx[2]
    hist = np.bincount(flat.ravel(), minlength=int(np.prod(HSV_BINS))).astype(np.float64)
    vec = np.sqrt(hist / hist.sum())
    return vec / np.linalg.norm(vec)


class Embedder:
    """L2-normalised image embeddings: `color-histogram`, or a vision backbone (DINOv2) at a path or hub id
    whose pooled output (the CLS token for DINOv2) is the feature."""

    def __init__(self, spec: str, device: str = "auto", batch_size: int = 32):
        self.spec = spec
        self.batch_size = batch_size
        if spec == COLOR_HISTOGRAM:
            return
        from transformers import AutoImageProcessor, AutoModel

        self.device = pick_device(device)
        self.processor = load_pretrained(AutoImageProcessor, spec, "embeddings")
        self.model = load_pretrained(AutoModel, spec, "embeddings").to(self.device).eval()

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        if self.spec == COLOR_HISTOGRAM:
            return np.stack([color_histogram(im) for im in images])
        import torch

        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start:start + self.batch_size]]
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.model(**inputs)
            pooled = getattr(out, "pooler_output", None)
            feats = pooled if pooled is not None else out.last_hidden_state[:, 0]
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
            chunks.append(feats.cpu().numpy())
        return np.concatenate(chunks).astype(np.float64)


def cluster(embeddings: np.ndarray, threshold: float, min_size: int, seed: int,
            resolution: float = 1.0) -> list[list[int]]:
    """Louvain communities of the graph whose edges join items with cosine similarity above `threshold`,
    weighted by it. Communities smaller than `min_size` are dropped. Each cluster is sorted; clusters come
    largest first (ties by first item), so the result depends on the inputs and seed only."""
    import networkx as nx

    n = len(embeddings)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    if n > 1:
        sims = embeddings @ embeddings.T
        rows, cols = np.nonzero(np.triu(sims > threshold, k=1))
        graph.add_weighted_edges_from((int(i), int(j), float(sims[i, j])) for i, j in zip(rows, cols, strict=True))
    communities = nx.community.louvain_communities(graph, weight="weight", resolution=resolution, seed=seed)
    clusters = [sorted(c) for c in communities if len(c) >= min_size]
    return sorted(clusters, key=lambda c: (-len(c), c[0]))


def medoid(embeddings: np.ndarray, members: list[int]) -> int:
    """The member most similar, on average, to the others (the cluster's most central crop)."""
    sub = embeddings[members]
    return members[int(np.argmax((sub @ sub.T).sum(axis=1)))]


class VLMVerifier:
    """Asks an image-text-to-text model (Qwen2-VL, ...) whether a crop shows the same character as the
    reference; greedy decoding, so the answer is deterministic. "yes" keeps the crop."""

    def __init__(self, spec: str, prompt: str, device: str = "auto"):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = pick_device(device)
        self.processor = load_pretrained(AutoProcessor, spec, "verified")
        self.model = load_pretrained(AutoModelForImageTextToText, spec, "verified").to(self.device).eval()
        self.prompt = prompt

    def __call__(self, crop: Image.Image, reference: Image.Image) -> bool:
        import torch

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                 {"type": "text", "text": self.prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=[text], images=[reference, crop], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=4, do_sample=False, num_beams=1)
        answer = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        return answer.strip().lower().startswith("yes")


def make_verifier(spec: str, prompt: str, device: str = "auto") -> Callable:
    return load_plugin(spec, "verified") if is_plugin(spec) else VLMVerifier(spec, prompt, device)
