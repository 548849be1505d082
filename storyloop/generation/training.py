"""What the Stage-1 and DPO trainers set up the same way: precision, memory plan, optimizer, learning-rate
schedule, and the run summary (step time, peak GPU memory) written beside the LoRA.

Both trainers build an Accelerator, then call these in order: `plan_for` (refuses a mode that cannot fit
before anything is loaded), `load_flux(..., quantization=plan.quantization)`, encode, `apply_memory_plan`,
`make_optimizer`, `make_lr_scheduler`. The scheduler is stepped by hand once per optimizer step rather than
prepared by accelerate, which would step it once per process and make a run depend on how many there are.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import parse_flag_from_env

from storyloop.generation.config import TrainingKnobs
from storyloop.generation.errors import ModelError
from storyloop.generation.fingerprint import looks_like_path
from storyloop.generation.memory import MemoryPlan, adamw, installed, resolve
from storyloop.generation.memory_estimate import FLUX1_DEV_TRANSFORMER, Workload, check_fits, model_sizes


def accelerate_precision(config: TrainingKnobs) -> str:
    """accelerate's mixed_precision for `config.mixed_precision`: auto is bf16 on a GPU, no on a CPU."""
    if config.mixed_precision != "auto":
        return config.mixed_precision
    on_gpu = torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")
    return "bf16" if on_gpu else "no"


def weight_dtype(precision: str) -> torch.dtype:
    """The frozen weights' dtype under accelerate's `precision` (LoRA weights are cast to fp32 apart)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def transformer_config(spec: str) -> dict:
    """The transformer config of a model folder, without loading it; FLUX.1-dev's for a hub id."""
    path = Path(spec).expanduser() / "transformer" / "config.json"
    if looks_like_path(spec) and path.is_file():
        return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    return FLUX1_DEV_TRANSFORMER


def memory_plan(memory: str, quantization: str, model: str, use: str, device, work: Workload) -> MemoryPlan:
    """The memory plan on `device`, after refusing (one line) a mode the GPU has too little memory for
    `work` on `model` (a folder's own transformer config; FLUX.1-dev's for a hub id)."""
    plan = resolve(memory, device, quantization)
    if str(device).startswith("cuda"):
        check_fits(memory, use, device, sizes=model_sizes(transformer_config(model)), work=work,
                   quantization=quantization)
    return plan


def plan_for(config: TrainingKnobs, model: str, use: str, device, work: Workload) -> MemoryPlan:
    """A trainer's memory plan (see `memory_plan`), after refusing an 8-bit optimizer without bitsandbytes."""
    if config.optimizer == "adamw8bit" and not installed("bitsandbytes"):
        raise ModelError("optimizer=adamw8bit needs bitsandbytes, which is not installed: pip install bitsandbytes")
    return memory_plan(config.memory, config.quantization, model, use, device, work)


def use_checkpointing(config: TrainingKnobs, plan: MemoryPlan) -> bool:
    return plan.gradient_checkpointing if config.gradient_checkpointing is None else config.gradient_checkpointing


def make_optimizer(groups: list[dict], config: TrainingKnobs, plan: MemoryPlan, lr: float, weight_decay: float):
    """AdamW over the trainable (fp32 LoRA) parameter groups; bitsandbytes' 8-bit AdamW when asked or when the
    memory mode says so and bitsandbytes is installed."""
    eight_bit = config.optimizer == "adamw8bit" or (config.optimizer == "auto" and plan.adam_8bit)
    return adamw(groups, plan, lr, weight_decay, eight_bit=eight_bit)


def make_lr_scheduler(optimizer, config: TrainingKnobs, total_steps: int, start_step: int = 0):
    """diffusers' named schedule over `total_steps` optimizer steps, with `lr_warmup_steps` of warmup,
    positioned at `start_step` (a resumed run).

    The rate is a function of (step, total_steps) alone, so a run resumed with the same config follows the
    schedule it would have, and one resumed with more steps follows the longer schedule from where it is.
    """
    import warnings

    from diffusers.optimization import get_scheduler

    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                              num_training_steps=total_steps)
    with warnings.catch_warnings():  # stepping a schedule before the optimizer is what fast-forwarding is
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start_step):
            scheduler.step()
    return scheduler


def peak_gb(device) -> float | None:
    """The most GPU memory torch held on `device` so far (GiB); None off CUDA."""
    if not str(device).startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


@dataclass
class RunClock:
    """Seconds per optimizer step and the GPU's peak memory, for `summary.json` and the progress bar."""

    device: object
    start: float = field(default_factory=time.perf_counter)
    steps: list[float] = field(default_factory=list)
    _last: float = field(default_factory=time.perf_counter)

    def step(self) -> None:
        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.steps.append(now - self._last)
        self._last = now

    def summary(self, **extra) -> dict:
        timed = self.steps[1:] or self.steps  # the first step pays for warm-up (allocation, kernels)
        return {"steps": len(self.steps), "seconds": round(time.perf_counter() - self.start, 3),
                "step_s": round(statistics.median(timed), 5) if timed else None,
                "peak_gb": None if (p := peak_gb(self.device)) is None else round(p, 3), **extra}

    def write(self, folder: Path, **extra) -> dict:
        """Write `folder/summary.json` (under a temporary name first) and return what was written."""
        summary = self.summary(**extra)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"summary.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(folder / "summary.json")
        return summary


class Terminated(BaseException):
    """SIGTERM arrived: torchrun stops a run's other processes this way when one dies, and so do job schedulers."""


@contextmanager
def sigterm_raises():
    """Inside, SIGTERM raises `Terminated` in the main thread, so a trainer can record why it stopped (Python's
    default ends the process on the spot, leaving a DPO run marked running). Call `hold_sigterm` before that
    record: the signal is often sent more than once. The previous handler is back on leaving.

    Best effort: Python runs the handler between bytecodes, so a process blocked inside one call (a GPU
    collective waiting for a rank that died) takes the launcher's later SIGKILL instead; gloo reports a dead
    peer at once, which reaches the same record as an exception."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers are the main thread's
        yield
        return

    global _open_blocks

    def stop(signum, frame):
        hold_sigterm()
        raise Terminated("stopped by SIGTERM (another process of the run failed, or the job was cancelled)")

    previous = signal.signal(signal.SIGTERM, stop)
    _open_blocks += 1
    try:
        yield
    finally:  # (None: a handler set outside Python, which cannot be put back; the default stands in)
        _open_blocks -= 1
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


_open_blocks = 0  # sigterm_raises blocks open in the main thread


def hold_sigterm() -> None:
    """Ignore SIGTERM until `sigterm_raises` ends: the process is stopping already, and writes why. Outside such a
    block it does nothing: an ignored SIGTERM would outlive the run, and every process started later (a pool's
    workers) inherits it and cannot be terminated."""
    if _open_blocks and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
