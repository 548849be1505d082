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


CONTENT_KINDS = ("animation", "live-action")
VIDEO_IMAGE_KINDS = ("frame", "crop")
DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"  # the paper's GroundingDINO, in transformers' classes
DEFAULT_EMBEDDER = "facebook/dinov2-base"  # the paper's DINOv2


@dataclass
class VideoConfig(DataKnobs):
    """`storyloop data video`: videos -> shots -> filtered frames -> character crops -> identity groups (3.3)."""

    content: str = knob("animation", "animation (pHash dedup of static frames) or live-action (blur, exposure and "
                                     "long-shot filters): picks the frame filters.")
    shot_detector: str = knob("content", "PySceneDetect detector: content (HSV change over a fixed threshold) or "
                                         "adaptive (change relative to its neighbours; steadier under camera motion).")
    content_threshold: float = knob(27.0, "ContentDetector: a cut where consecutive frames differ by more than this.")
    adaptive_threshold: float = knob(3.0, "AdaptiveDetector: a cut where a frame's change exceeds this multiple of "
                                          "its neighbours'.")
    min_shot_frames: int = knob(15, "Shortest shot, in frames (a cut closer than this to the last is ignored).")
    frames_per_shot: int = knob(3, "Frames sampled per shot, evenly spaced inside it.")
    static_max_distance: int = knob(4, "animation: a frame within this many pHash bits of the last kept frame "
                                       "of its video is static and dropped.")
    blur_min_sharpness: float = knob(100.0, "live-action: drop a frame whose Laplacian variance (at 256 px wide) "
                                            "is below this (motion blur).")
    dark_below: float = knob(40.0, "live-action: drop a frame whose mean luminance (0-255) is below this.")
    bright_above: float = knob(215.0, "live-action: drop a frame whose mean luminance is above this.")
    max_clipped: float = knob(0.3, "live-action: drop a frame with more than this fraction of pixels at black "
                                   "(<=5) or white (>=250).")
    long_shot_min_area: float = knob(0.02, "live-action: drop a frame whose largest character box covers less "
                                           "than this fraction of it (an extreme long shot).")
    detector: str = knob(DEFAULT_DETECTOR, "Zero-shot detector (folder or hub id: GroundingDINO, OWL-ViT, "
                                           "OWLv2). Empty: each whole frame is one crop.")
    detector_query: str = knob("a character.", "What the detector looks for; several as 'a person. a cartoon "
                                               "character.'")
    box_threshold: float = knob(0.35, "Keep a detected box scoring at least this.")
    text_threshold: float = knob(0.25, "GroundingDINO: keep a box whose matched words score at least this.")
    max_boxes: int = knob(4, "Most crops kept per frame (best scores first).")
    min_box_pixels: int = knob(32, "Drop a box narrower or shorter than this many pixels.")
    detection_batch_size: int = knob(8, "Frames per detector batch.")
    embedder: str = knob(DEFAULT_EMBEDDER, "Crop embeddings: a vision model (folder or hub id; DINOv2's CLS "
                                           "token) or color-histogram (an HSV histogram, no model).")
    embedding_batch_size: int = knob(32, "Crops per embedder batch.")
    similarity_threshold: float = knob(0.7, "Join two crops in the identity graph when their cosine similarity "
                                            "exceeds this.")
    louvain_resolution: float = knob(1.0, "Louvain resolution: above 1 gives more, smaller clusters.")
    min_cluster_size: int = knob(4, "Drop a cluster (before and after verification) with fewer crops than this.")
    verifier: str = knob("", "Outlier check per crop against its cluster's most central crop: a VLM (folder or hub "
                             "id, e.g. Qwen2-VL) or module:function(crop, reference) -> bool. Empty: off.")
    verifier_prompt: str = knob("The first image shows a character. Does the second image show the same "
                                "character? Answer yes or no.", "The VLM verifier's question (a yes keeps a crop).")
    image: str = knob("frame", "What a group holds: frame (the whole frame, its box in the `box` column) or crop "
                               "(the character alone).")

    def __post_init__(self):
        super().__post_init__()
        for name, allowed in (("content", CONTENT_KINDS), ("shot_detector", ("content", "adaptive")),
                              ("image", VIDEO_IMAGE_KINDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("min_shot_frames", "frames_per_shot", "max_boxes", "detection_batch_size",
                     "embedding_batch_size", "min_cluster_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("max_clipped", "long_shot_min_area", "box_threshold", "text_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not -1.0 <= self.similarity_threshold < 1.0:
            raise ValueError("similarity_threshold is a cosine similarity: between -1 and 1")
        if not self.embedder:
            raise ValueError("embedder must be a model (folder or hub id) or color-histogram")
