"""Training configs: every knob with its type, default and one line of meaning.

Kept free of heavy imports so the CLI can build its help from them instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from storyloop.generation.memory import FP16_REASON


def knob(default, help: str):
    """A config field with its one line of meaning (shown in --help and the README)."""
    return field(default=default, metadata={"help": help})


def read_yaml(text: str):
    """YAML as config files and `--set` values mean it: only true/false are booleans.

    PyYAML follows YAML 1.1, where yes/no/on/off are booleans too, so `mixed_precision: no` would
    arrive as False and fail to be the text "no".
    """
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    return yaml.load(text, Loader=Loader)


class ConfigSources:
    """For config dataclasses: build from defaults, a YAML file and overrides; describe every knob."""

    # pydantic reads this when it validates a subclass: a number given for a text knob becomes text
    __pydantic_config__ = {"coerce_numbers_to_str": True}

    @classmethod
    def from_sources(cls, yaml_path: Path | None = None, **overrides):
        """Defaults, then a YAML file, then explicit overrides (None means 'not given').

        Values are converted to each knob's type by pydantic: YAML reads `1e-4` as text (YAML 1.1
        wants `1.0e-4`), which must still be a learning rate. A value that does not convert is a
        ValueError naming its key and source.
        """
        from pydantic import TypeAdapter, ValidationError

        known = {f.name for f in fields(cls)}
        values: dict = {}
        if yaml_path is not None:
            values = read_yaml(Path(yaml_path).read_text()) or {}
            if not isinstance(values, dict):
                raise ValueError(f"{yaml_path}: expected KEY: VALUE lines, got {type(values).__name__}")
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"{yaml_path}: unknown key(s) {', '.join(sorted(unknown))}")
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - known
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        values.update(given)
        try:
            return TypeAdapter(cls).validate_python(values)
        except ValidationError as exc:
            source = {k: "command line" if k in given else str(yaml_path) for k in values}
            raise ValueError("; ".join(_describe(e, source) for e in exc.errors())) from None

    @classmethod
    def describe(cls) -> str:
        return "\n".join(f"{f.name} ({f.default!r}): {f.metadata['help']}" for f in fields(cls))


def _describe(error: dict, source: dict[str, str]) -> str:
    """One pydantic error as `key (source): what is wrong (got value)`; checks of __post_init__ as they are."""
    if not error["loc"]:
        return str(error.get("ctx", {}).get("error", error["msg"]))
    key = str(error["loc"][0])
    return f"{key} ({source.get(key, 'default')}): {error['msg'].lower()} (got {error['input']!r})"


# diffusers.optimization.SchedulerType's names (a test keeps the two in step; this module stays light).
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
OPTIMIZERS = ("auto", "adamw", "adamw8bit")
MEMORY_MODES = ("full", "80gb", "24gb")  # defined in storyloop.generation.memory
QUANTIZATIONS = ("auto", "none", "nf4", "int8", "fp8")


@dataclass
class TrainingKnobs(ConfigSources):
    """The knobs both trainers share: hardware, precision, optimizer and learning-rate schedule."""

    memory: str = knob("80gb", "Memory mode: full (no savings), 80gb (encoders leave the GPU, checkpointing) or "
                               "24gb (also a quantised base and 8-bit AdamW); see storyloop bench memory.")
    quantization: str = knob("auto", "Frozen transformer weights: auto (the memory mode's), none, nf4 "
                                     "(bitsandbytes, CUDA), int8 or fp8 (torchao, CUDA or CPU).")
    mixed_precision: str = knob("auto", "auto (bf16 on a GPU, no on a CPU), no or bf16 (accelerate autocast); "
                                        "fp16 is refused: FLUX overflows in it. LoRA weights stay fp32.")
    gradient_checkpointing: bool | None = knob(None, "Recompute block activations in backward to save memory "
                                                     "(default: the memory mode's).")
    optimizer: str = knob("auto", "auto (the memory mode's: 8-bit AdamW in 24gb when bitsandbytes is "
                                  "installed), adamw or adamw8bit.")
    lr_scheduler: str = knob("constant", "Learning-rate schedule (diffusers' get_scheduler): " + ", ".join(LR_SCHEDULERS)
                                         + ".")
    lr_warmup_steps: int = knob(0, "Steps of linear warmup from 0 to learning_rate.")

    def __post_init__(self):
        if self.mixed_precision == "fp16":
            raise ValueError(f"mixed_precision=fp16 is refused: {FP16_REASON}; use bf16 (or no)")
        for name, allowed in (("memory", MEMORY_MODES), ("quantization", QUANTIZATIONS),
                              ("mixed_precision", ("auto", "no", "bf16")), ("optimizer", OPTIMIZERS),
                              ("lr_scheduler", LR_SCHEDULERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})")
        if self.lr_warmup_steps < 0:
            raise ValueError("lr_warmup_steps must be >= 0")


@dataclass
class Stage1Config(TrainingKnobs):
    """Every knob of Stage-1 training, in the naming of diffusers' FLUX LoRA training scripts."""

    model: str = knob("", "FLUX.1 base: diffusers-format folder or hub id.")
    dataset: str = knob("", "Dataset folder with metadata.jsonl (group, image, caption per line).")
    output_dir: str = knob("stage1-out", "Where the LoRA, checkpoints, cache and logs go.")
    rank: int = knob(16, "LoRA rank on every linear layer of the transformer blocks.")
    lora_alpha: int = knob(16, "LoRA alpha (scale = alpha / rank).")
    init_lora: str = knob("", "A Stage-1 LoRA folder for this base to start from (fine-tuning; its rank and alpha "
                              "must be rank and lora_alpha); empty: a new LoRA.")
    learning_rate: float = knob(1e-4, "AdamW learning rate (after warmup; see lr_scheduler).")
    adam_weight_decay: float = knob(1e-4, "AdamW weight decay.")
    max_grad_norm: float = knob(1.0, "Gradient clipping norm.")
    max_train_steps: int = knob(1000, "Optimizer steps.")
    train_batch_size: int = knob(1, "Groups (one target each) per micro-batch.")
    gradient_accumulation_steps: int = knob(1, "Micro-batches per optimizer step.")
    num_references: int = knob(2, "References per target (N in the paper); groups need N + 1 images.")
    resolution: int = knob(1024, "Training area: each image goes to the aspect bucket of about resolution^2 pixels "
                                 "nearest its aspect ratio (resolution x resolution when square).")
    aspect_buckets: bool = knob(True, "Train images of many sizes in aspect-ratio buckets (sides multiples of 16 "
                                      "for FLUX, aspect 1:2 to 2:1, resized to cover and centre-cropped); false: "
                                      "every image is centre-cropped to resolution x resolution.")
    caption_dropout: float = knob(0.1, "Probability of training a target on the empty prompt.")
    guidance_scale: float = knob(3.5, "Distilled-guidance value fed to FLUX.1-dev during training.")
    logit_mean: float = knob(0.0, "Mean of the logit-normal noise-level sampling.")
    logit_std: float = knob(1.0, "Std of the logit-normal noise-level sampling.")
    max_sequence_length: int = knob(512, "T5 prompt tokens.")
    checkpointing_steps: int = knob(500, "Save a resumable checkpoint every this many steps.")
    checkpoints_total_limit: int = knob(3, "Keep at most this many checkpoints.")
    report_to: str = knob("tensorboard", "accelerate tracker: tensorboard, wandb, ... or none.")
    seed: int = knob(0, "Seed of every random choice (groups, noise, timesteps, dropout).")

    def __post_init__(self):
        super().__post_init__()
        if self.num_references < 0:
            raise ValueError("num_references must be >= 0")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError("caption_dropout must be in [0, 1)")
        for name in ("max_train_steps", "train_batch_size", "gradient_accumulation_steps", "checkpointing_steps",
                     "rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass
class DrawConfig:
    """Knobs of `storyloop sample` and `storyloop story` (generation/draw.py); the sampling defaults are
    `generate run`'s (GenerateConfig: a test keeps them in step; this module stays light)."""

    num_images: int = knob(1, "Images per prompt (per frame of a story).")
    seed: int = knob(0, "sample: image k gets seed + k. story: the base seed every image derives its own from.")
    num_inference_steps: int = knob(50, "Denoising steps (Euler, flow matching).")
    guidance_scale: float = knob(3.5, "Distilled guidance scale (FLUX.1-dev).")
    height: int = knob(1024, "Image height in pixels (a multiple of 16 for FLUX).")
    width: int = knob(1024, "Image width in pixels (a multiple of 16 for FLUX).")
    reference_guidance_scale: float = knob(1.0, "Guidance over the references: 1 = the paper's sampler, 0 = "
                                                "without them, any other value costs 2x.")
    max_sequence_length: int = knob(512, "T5 prompt tokens.")
    memory: str = knob("80gb", "Memory mode, as generate run: full, 80gb (sliced VAE decode) or 24gb (also a "
                               "quantised base, tiled VAE).")
    quantization: str = knob("auto", "Frozen transformer: auto (the memory mode's), none, nf4, int8 or fp8.")

    def __post_init__(self):
        from storyloop.generation.errors import DrawError

        if self.num_images < 1 or self.num_inference_steps < 1:
            raise DrawError("the number of images and of inference steps must be at least 1")
        if self.reference_guidance_scale < 0:
            raise DrawError(f"the reference guidance scale must be at least 0, got {self.reference_guidance_scale}")
        if self.memory not in MEMORY_MODES or self.quantization not in QUANTIZATIONS:
            raise DrawError(f"memory must be one of {', '.join(MEMORY_MODES)} and quantization one of "
                            f"{', '.join(QUANTIZATIONS)} (got {self.memory!r}, {self.quantization!r})")

    @classmethod
    def default(cls, name: str):
        return next(f.default for f in fields(cls) if f.name == name)

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)
