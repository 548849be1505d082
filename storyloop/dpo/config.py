"""DPOConfig: every knob of the Diffusion-DPO trainer (names follow trl's DPOConfig where they fit)."""

from __future__ import annotations

from dataclasses import dataclass

from storyloop.generation.config import TrainingKnobs, knob


@dataclass
class DPOConfig(TrainingKnobs):
    """Flow-matching Diffusion-DPO on a frozen base + frozen Stage-1 LoRA (paper section 4.4, eqs. 7-8)."""

    round: str = knob("", "The judged round whose pairs train the LoRA.")
    model: str = knob("", "FLUX base folder or hub id; default: the round's base model.")
    output_dir: str = knob("dpo-out", "Where the LoRA, checkpoints, cache and logs go.")
    beta: float = knob(2000.0, "DPO temperature (Wallace et al. 2023) for per-element *mean* velocity MSE; "
                               "a sum over elements would need beta / element count.")
    rpo_alpha: float = knob(0.0, "Weight of the winners' own velocity MSE added to the DPO loss (trl's rpo_alpha, "
                                 "Pang et al. 2024); 0: pure DPO.")
    learning_rate: float = knob(2e-5, "AdamW learning rate (after warmup; see lr_scheduler).")
    adam_weight_decay: float = knob(0.0, "AdamW weight decay.")
    max_grad_norm: float = knob(1.0, "Gradient clipping norm.")
    max_steps: int = knob(1000, "Optimizer steps.")
    train_batch_size: int = knob(1, "Pairs per micro-batch (scenarios in a batch need equal reference counts).")
    gradient_accumulation_steps: int = knob(1, "Micro-batches per optimizer step.")
    rank: int = knob(16, "Rank of the DPO LoRA (zero-initialised, every block linear).")
    lora_alpha: int = knob(16, "Alpha of the DPO LoRA.")
    train_reference_gain: bool = knob(False, "Also learn a reference gain: per layer and head, a zero-initialised "
                                             "bias on target->reference attention logits, saved with the LoRA.")
    reference_gain_learning_rate: float = knob(1e-2, "AdamW learning rate of the reference gain.")
    train_lora: bool = knob(True, "Train the DPO LoRA; false keeps it at zero, so only the reference gain learns.")
    resolution: int = knob(1024, "Largest candidate area trained on, resolution^2 pixels: candidates are encoded at "
                                 "their own size, larger ones scaled down keeping their aspect ratio.")
    max_sequence_length: int = knob(512, "T5 prompt tokens.")
    guidance_scale: float = knob(3.5, "Distilled-guidance value fed to FLUX.1-dev.")
    logit_mean: float = knob(0.0, "Mean of the logit-normal noise-level sampling.")
    logit_std: float = knob(1.0, "Std of the logit-normal noise-level sampling.")
    min_agreement: float = knob(0.6, "Share of annotators that must agree for a label to count (> 0.5).")
    min_votes: int = knob(2, "Scenarios with fewer non-skipped judgments give no pairs (1 trusts a single "
                             "annotator's view).")
    complete_only: bool = knob(False, "Only scenarios that reached the round's k non-skipped judgments.")
    level_weights: tuple = knob((1.0, 2.0, 4.0), "Sampling weight of losers failing at consistency, "
                                                 "anatomy, aesthetics (hard negatives weigh more).")
    include_gold: bool = knob(False, "Also train on the gold scenarios.")
    logging_steps: int = knob(1, "Log metrics (trackers and the DB run row) every this many steps.")
    save_steps: int = knob(100, "Save a resumable checkpoint every this many steps.")
    save_total_limit: int = knob(3, "Keep at most this many checkpoints.")
    eval_steps: int = knob(0, "Score the policy every this many steps (0: never): on the eval_split pairs, "
                              "or with an `evaluate` callback from the Python API (the toy loop's judge).")
    eval_split: float = knob(0.0, "Share of the round's scenarios with pairs kept out of training; eval_steps "
                                  "scores the policy by its DPO loss on their pairs (eval/loss).")
    eval_batch_size: int = knob(0, "Held-out pairs per forward when scoring (0: train_batch_size); the processes "
                                   "share the chunks. Each pair has its own fixed noise: the score depends on "
                                   "neither this nor the number of processes.")
    load_best_model_at_end: bool = knob(False, "Save the best-scoring evaluated adapter as the LoRA, not the last.")
    report_to: str = knob("tensorboard", "accelerate tracker: tensorboard, wandb, ... or none.")
    seed: int = knob(0, "Seed of pairs, noise and timesteps.")

    def __post_init__(self):
        super().__post_init__()
        self.level_weights = tuple(float(w) for w in self.level_weights)
        if len(self.level_weights) != 3 or min(self.level_weights) <= 0:
            raise ValueError("level_weights needs 3 positive weights (consistency, anatomy, aesthetics)")
        if self.beta <= 0:
            raise ValueError("beta must be positive")
        if self.rpo_alpha < 0:
            raise ValueError("rpo_alpha must be >= 0")
        if not 0.5 < self.min_agreement <= 1:
            raise ValueError("min_agreement must be in (0.5, 1]")
        if self.min_votes < 1:
            raise ValueError("min_votes must be at least 1")
        if self.eval_steps < 0:
            raise ValueError("eval_steps must be 0 (never) or positive")
        if not 0 <= self.eval_split < 1:
            raise ValueError("eval_split must be in [0, 1)")
        if self.eval_batch_size < 0:
            raise ValueError("eval_batch_size must be 0 (train_batch_size) or positive")
        if self.eval_split and not self.eval_steps:
            raise ValueError("eval_split needs eval_steps (how often to score the held-out pairs)")
        if not (self.train_lora or self.train_reference_gain):
            raise ValueError("train_lora=false needs train_reference_gain=true: nothing would learn")
        if self.load_best_model_at_end and not self.eval_steps:
            raise ValueError("load_best_model_at_end needs eval_steps")
        for name in ("max_steps", "train_batch_size", "gradient_accumulation_steps", "rank", "logging_steps",
                     "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
