"""Tiny random models of the real classes the data pipelines load, built in code and saved to folders (nothing
is downloaded): zero-shot CLIP, a fine-tuned narrative classifier (ViT), the OWL-ViT and GroundingDINO
detectors, DINOv2 and a BLIP captioner."""

from __future__ import annotations

from pathlib import Path

import torch

from storyloop.generation.tiny import word_tokenizer

WORDS = ("a an the page of picture book story scene cover title preface text illustration layout "
         "character person cartoon animal").split()


def tiny_clip(folder: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(WORDS) + 3, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, pad_token_id=0, bos_token_id=1,
                         eos_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).eval().save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=word_tokenizer(WORDS, 32))
    processor.save_pretrained(folder)
    return folder


def tiny_owlvit(folder: Path, seed: int = 0) -> Path:
    """An OWL-ViT text-box detector ("zero-shot-object-detection" in transformers' pipelines)."""
    from transformers import (
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    torch.manual_seed(seed)
    config = OwlViTConfig(
        text_config=dict(vocab_size=len(WORDS) + 3, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=1,
                         eos_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16)
    model = OwlViTForObjectDetection(config).eval()
    with torch.no_grad():  # boxes = each patch's own cell (the head's fixed bias), so every box has an area
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    model.save_pretrained(folder)
    processor = OwlViTProcessor(image_processor=OwlViTImageProcessor(size={"height": 32, "width": 32},
                                                                     crop_size={"height": 32, "width": 32}),
                                tokenizer=word_tokenizer(WORDS, 16))
    processor.save_pretrained(folder)
    return folder


def tiny_blip(folder: Path, seed: int = 0) -> Path:
    """A BLIP captioner (AutoModelForImageTextToText) that writes random words, greedily (positions for the
    longest caption the pipelines ask for, 77 tokens)."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    torch.manual_seed(seed)
    tok = word_tokenizer(WORDS, 16)
    config = BlipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=128, encoder_hidden_size=16,
                         pad_token_id=0, bos_token_id=2, eos_token_id=1, sep_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16)
    model = BlipForConditionalGeneration(config).eval()
    model.generation_config.max_new_tokens = 6
    model.save_pretrained(folder)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    processor.save_pretrained(folder)
    return folder


def tiny_narrative_classifier(folder: Path, narrative: list, other: list, seed: int = 0, steps: int = 300) -> Path:
    """A ViT image classifier (labels: other, narrative) fine-tuned here on the given PIL pages until it is
    sure of every one (probability of the right label >= 0.97): the paper's fine-tuned filter in small."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_labels=2, id2label={0: "other", 1: "narrative"},
                       label2id={"other": 0, "narrative": 1})
    model = ViTForImageClassification(config)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    pixels = processor(images=[im.convert("RGB") for im in narrative + other], return_tensors="pt")["pixel_values"]
    labels = torch.tensor([1] * len(narrative) + [0] * len(other))
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        logits = model(pixel_values=pixels).logits
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if logits.softmax(-1)[torch.arange(len(labels)), labels].min() >= 0.97:
            break
        optim.zero_grad()
        loss.backward()
        optim.step()
    else:
        raise AssertionError("the tiny narrative classifier did not learn its pages")
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """GroundingDINO (the paper's detector) with a 2-stage Swin backbone, a 1-layer BERT and 10 queries."""
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    torch.manual_seed(seed)
    tokenizer = word_tokenizer([*WORDS, "."], 32)
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


def tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """DINOv2 (AutoModel) with one 32-wide layer on 32 px inputs, and its AutoImageProcessor."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=32, patch_size=8)).eval().save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)
