"""Every knob of the two data pipelines, with its default and one line of meaning (shown in --help).

Kept free of heavy imports so the CLI can build its help instantly.
"""

from __future__ import annotations

from dataclasses import dataclass

from storyloop.generation.config import ConfigSources, knob

DEFAULT_CAPTIONER = "florence-community/Florence-2-large"  # the paper's captioner, in transformers' own classes


@dataclass
class DataKnobs(ConfigSources):
    """What both pipelines share: parallelism, determinism, the work cache and captions."""

    workers: int = knob(2, "Processes for the per-book / per-video stages (1: all in this process).")
    seed: int = knob(0, "Seed for every random choice (the same inputs and seed give the same dataset).")
    device: str = knob("auto", "Device for the model stages: auto (cuda when present), cpu, cuda, cuda:1, ...")
    cache_dir: str = knob("", "Where finished work is kept by content hash, so a rerun skips it "
                              "(default: OUT.cache next to the output).")
    captioner: str = knob(DEFAULT_CAPTIONER, "Image-to-text model (folder or hub id) for captions; Florence-2 "
                                             "runs in its detailed-caption mode. Empty: no captions.")
    captions_file: str = knob("", "Captions from a file instead of a model: JSON lines of {key, caption}, key = "
                                  "an image's source or sha256 (or a .json object key -> caption).")
    caption_batch_size: int = knob(8, "Images per captioning batch.")
    caption_max_tokens: int = knob(77, "Longest caption, in tokens (77 fits CLIP; T5 takes more).")

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.caption_batch_size < 1 or self.caption_max_tokens < 1:
            raise ValueError("caption_batch_size and caption_max_tokens must be >= 1")
