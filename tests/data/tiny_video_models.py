"""Tiny random models of the video pipeline's real classes, built in code and saved to a folder (nothing is
downloaded), and verifier callables for `--verifier module:function`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from storyloop.generation.tiny import word_tokenizer

QUERY_WORDS = "a an the character person cartoon animal".split()


def save_tiny_owlvit(folder: Path, seed: int = 0) -> Path:
    """OWL-ViT (AutoModelForZeroShotObjectDetection) with a 2-layer 32-wide text and vision tower."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    torch.manual_seed(seed)
    tokenizer = word_tokenizer(QUERY_WORDS, 16)
    config = OwlViTConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=1,
                         eos_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32)
    OwlViTForObjectDetection(config).eval().save_pretrained(folder)
    image_processor = OwlViTImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64})
    OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return Path(folder)


def save_tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """DINOv2 (AutoModel) with one 32-wide layer on 32 px inputs, and its AutoImageProcessor."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=32, patch_size=8)).eval().save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)


def _dominant_hue(image: Image.Image) -> int:
    """The most common hue (12 bins) among saturated, not-too-dark pixels."""
    hsv = np.asarray(image.convert("RGB").convert("HSV")).reshape(-1, 3).astype(int)
    colored = hsv[(hsv[:, 1] > 100) & (hsv[:, 2] > 60)]
    if len(colored) == 0:
        return -1
    return int(np.bincount(colored[:, 0] * 12 // 256, minlength=12).argmax())


def same_dominant_hue(crop: Image.Image, reference: Image.Image) -> bool:
    """A verifier: the crop's most common saturated colour is the reference's."""
    return _dominant_hue(crop) == _dominant_hue(reference)


def never(crop: Image.Image, reference: Image.Image) -> bool:
    """A verifier that rejects every crop (only each cluster's reference survives)."""
    return False
