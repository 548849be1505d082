"""Tiny random models of the video pipeline's real classes, built in code and saved to a folder (nothing is
downloaded), and verifier callables for `--verifier module:function`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# torch and transformers are imported inside the builders: a verifier imported by `--verifier` stays cheap.
QUERY_WORDS = "a an the character person cartoon animal".split()


def save_tiny_owlvit(folder: Path, seed: int = 0) -> Path:
    """OWL-ViT (AutoModelForZeroShotObjectDetection) with a 2-layer 32-wide text and vision tower."""
    import torch

    from storyloop.generation.tiny import word_tokenizer

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


def save_tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """GroundingDINO (the paper's detector) with a 2-stage Swin backbone, a 1-layer BERT and 10 queries."""
    import torch

    from storyloop.generation.tiny import word_tokenizer

    from transformers import (BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    torch.manual_seed(seed)
    tokenizer = word_tokenizer([*QUERY_WORDS, "."], 32)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                   window_size=4, out_features=["stage1", "stage2"]),
        text_config=BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=32),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10, num_feature_levels=2, encoder_n_points=2,
        decoder_n_points=2, max_text_len=32, use_timm_backbone=False)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return Path(folder)


def save_tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """DINOv2 (AutoModel) with one 32-wide layer on 32 px inputs, and its AutoImageProcessor."""
    import torch

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
