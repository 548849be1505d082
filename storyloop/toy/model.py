"""The toy world's FLUX.1: diffusers' real pipeline classes with small configs.

Text goes through the real FLUX prompt path (CLIP pooled + T5 sequence) with encoders built from
configs over the world's vocabulary (random, frozen); images through the lossless pixel-unshuffle
codec; the transformer is `FluxTransformer2DModel`, so GSA, Stage-1, generation and DPO run the
exact code that real FLUX runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from storyloop.generation.tiny import word_tokenizer
from storyloop.toy.codec import PixelUnshuffleCodec
from storyloop.toy.world import vocabulary

IMAGE_SIZE = 64
MAX_SEQUENCE_LENGTH = 48  # T5 and CLIP tokens: the longest caption (40) fits
TRANSFORMER = dict(patch_size=1, in_channels=48, num_layers=2, num_single_layers=4, attention_head_dim=64,
                   num_attention_heads=3, joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=False,
                   axes_dims_rope=(16, 24, 24))


def build_toy_pipeline(seed: int = 0) -> FluxPipeline:
    torch.manual_seed(seed)
    words = vocabulary()
    tokenizer = word_tokenizer(words, MAX_SEQUENCE_LENGTH)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        max_position_embeddings=MAX_SEQUENCE_LENGTH, pad_token_id=0,
                                        eos_token_id=1, bos_token_id=1))
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=64, d_ff=128, d_kv=32, num_layers=1,
                                 num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    return FluxPipeline(scheduler=scheduler, vae=PixelUnshuffleCodec(), text_encoder=clip.eval(), tokenizer=tokenizer,
                        text_encoder_2=t5.eval(), tokenizer_2=word_tokenizer(words, 512),
                        transformer=FluxTransformer2DModel(**TRANSFORMER).eval())


def save_toy_pipeline(pipe: FluxPipeline, folder: Path) -> None:
    """Save with the transformer in float16 (the committed weights stay a few MB); loading casts back."""
    pipe.transformer.to(torch.float16)
    try:
        pipe.save_pretrained(folder)
    finally:
        pipe.transformer.to(torch.float32)
