"""A complete FLUX.1 pipeline in miniature, built in code: every component is the real class.

Used by the tests and the toy world, which cannot download FLUX. The tokenizers are WordLevel
vocabularies built in memory; the text encoders are T5 and CLIP from configs; the VAE and the
transformer are diffusers' own classes with small configs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

SPECIAL = ["[PAD]", "[EOS]", "[UNK]"]


def word_tokenizer(words: Iterable[str], max_length: int) -> PreTrainedTokenizerFast:
    """A lower-casing whitespace/punctuation word tokenizer that appends [EOS]."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + sorted({w.lower() for w in words} - set(SPECIAL)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]",
                                   unk_token="[UNK]", model_max_length=max_length)


def tiny_flux_pipeline(words: Iterable[str], seed: int = 0, clip_length: int = 16, transformer: dict | None = None,
                       vae_channels: tuple[int, ...] = (8, 16), latent_channels: int = 4) -> FluxPipeline:
    """A FluxPipeline with small random components (all in eval mode: T5 has dropout)."""
    words = list(words)
    torch.manual_seed(seed)
    tokenizer = word_tokenizer(words, clip_length)
    vocab = len(tokenizer)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=clip_length,
                                        pad_token_id=0, eos_token_id=1, bos_token_id=1))
    t5 = T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2,
                                 pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
                        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
                        block_out_channels=vae_channels, layers_per_block=1, norm_num_groups=4,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0, scaling_factor=1.0)
    tcfg = dict(patch_size=1, in_channels=4 * latent_channels, num_layers=2, num_single_layers=2,
                attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16,
                guidance_embeds=True, axes_dims_rope=(4, 6, 6))
    tcfg.update(transformer or {})
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=clip.eval(), tokenizer=tokenizer,
                        text_encoder_2=t5.eval(), tokenizer_2=word_tokenizer(words, 512),
                        transformer=FluxTransformer2DModel(**tcfg).eval())
    return pipe
