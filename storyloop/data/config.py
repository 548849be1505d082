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


DEFAULT_NARRATIVE_MODEL = "openai/clip-vit-large-patch14"  # zero-shot CLIP ViT-L/14 (the paper fine-tunes one)
DEFAULT_TEXT_DETECTOR = "google/owlv2-base-patch16-ensemble"  # open-vocabulary boxes for the query "text"
NARRATIVE_KINDS = ("auto", "zero-shot", "classifier")


@dataclass
class BooksConfig(DataKnobs):
    """Pipeline A (section 3.2): picture books (PDFs or folders of page images) into one group per book."""

    dpi: int = knob(150, "Resolution at which PDF pages are rendered (72 = one pixel per point).")
    min_side: int = knob(512, "Resolution filter: a page is kept when both its width and height exceed this "
                              "many pixels (the paper: 512).")
    max_pixels: int = knob(89_478_485, "A page or image over this many pixels is skipped as a decompression "
                                       "bomb (Pillow's own limit).")
    narrative_filter: bool = knob(True, "Drop covers, prefaces and layout pages by a classifier's score.")
    narrative_model: str = knob(DEFAULT_NARRATIVE_MODEL, "Narrative classifier (folder or hub id): a CLIP-like "
                                                         "model scored zero-shot by two prompts, or a fine-tuned "
                                                         "image classifier.")
    narrative_kind: str = knob("auto", "zero-shot (AutoModel + the two prompts), classifier "
                                       "(AutoModelForImageClassification) or auto (by the model's config).")
    narrative_prompt: str = knob("an illustration from inside a children's picture book, a scene of the story",
                                 "Zero-shot: the prompt for a narrative page.")
    other_prompt: str = knob("a book cover, title page, preface, table of contents or a page of text",
                             "Zero-shot: the prompt for everything else.")
    narrative_label: str = knob("narrative", "Classifier: the label (config id2label) that means narrative.")
    narrative_threshold: float = knob(0.9, "Keep pages whose narrative score (a probability) is at least this "
                                           "(the paper: 0.9; above 1 drops every page).")
    narrative_batch_size: int = knob(16, "Pages per classifier batch.")
    text_removal: bool = knob(False, "Find text boxes and inpaint them away (needs a detector model).")
    text_detector: str = knob(DEFAULT_TEXT_DETECTOR, "Text boxes: a zero-shot object detector (folder or hub id: "
                                                     "OWLv2, OWL-ViT, GroundingDINO) or module:function, a "
                                                     "callable (PIL image) -> [(x0, y0, x1, y1), ...].")
    text_queries: tuple[str, ...] = knob(("text",), "Detector queries whose boxes are text.")
    text_box_threshold: float = knob(0.1, "Detector score at or above which a box is text.")
    text_mask_grow: int = knob(4, "Pixels added around every text box before inpainting.")
    inpainter: str = knob("telea", "Inpainting: telea or ns (OpenCV's cv2.inpaint) or module:function, a "
                                   "callable (PIL image, PIL mask 'L', 255 = fill) -> PIL image.")
    inpaint_radius: int = knob(5, "OpenCV inpainting radius in pixels.")
    dedup_distance: int = knob(6, "Near-duplicates within a book: pages within this many bits (of 64) of an "
                                  "earlier kept page's pHash are dropped.")
    min_frames: int = knob(4, "Books with fewer frames than this after dedup are dropped (the paper: 4).")

    def __post_init__(self):
        super().__post_init__()
        if self.dpi < 1 or self.min_side < 0 or self.max_pixels < 1:
            raise ValueError("dpi and max_pixels must be >= 1, min_side >= 0")
        if self.narrative_kind not in NARRATIVE_KINDS:
            raise ValueError(f"narrative_kind must be one of {', '.join(NARRATIVE_KINDS)}")
        if self.narrative_threshold < 0 or self.narrative_batch_size < 1:
            raise ValueError("narrative_threshold must be >= 0 and narrative_batch_size >= 1")
        if not self.text_queries and self.text_removal:
            raise ValueError("text_queries must name at least one query when text_removal is on")
        if self.text_mask_grow < 0 or self.inpaint_radius < 1:
            raise ValueError("text_mask_grow must be >= 0 and inpaint_radius >= 1")
        if not 0 <= self.dedup_distance <= 64 or self.min_frames < 1:
            raise ValueError("dedup_distance must be in 0..64 and min_frames >= 1")
