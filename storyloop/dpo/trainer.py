"""The Diffusion-DPO trainer: a zero-initialised refinement LoRA on top of a frozen Stage-1 model.

Policy    = base (frozen) + Stage-1 LoRA (frozen) + DPO LoRA (trainable, B = 0 at start).
Reference = the same weights with the DPO LoRA scaled to zero: the Stage-1 model, no second copy.

Per pair, winner and loser get the same noise and the same noise level and are conditioned on the
same clean references through GSA. The DPO LoRA is not applied to the references' own tokens: the
reference path stays the Stage-1 model's, so one reference pass per batch (no grad, DPO off) serves
all four forwards (policy/reference x winner/loser) and generation writes its reference cache the
same way. `storyloop bench dpo` measures what that saves against four full forwards.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list
from diffusers.training_utils import cast_training_params
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from sqlalchemy import func, select
from tqdm.auto import tqdm

from storyloop.db import read_scope, session_scope
from storyloop.db.models import DpoMetric, DpoRun, RunStatus, ScenarioReference, utcnow
from storyloop.db.rounds import RoundError, get_round
from storyloop.dpo.config import DPOConfig
from storyloop.dpo.errors import DPOError
from storyloop.dpo.data import PairBatchTensors, PairData, assemble, encode_pairs
from storyloop.dpo.loss import diffusion_dpo_loss, velocity_error
from storyloop.dpo.pools import AggregationPolicy, every_pair, round_pools, split_scenarios
from storyloop.dpo.sampler import PairSampler
from storyloop.generation.checkpoints import resume_latest, save_checkpoint
from storyloop.generation.encoding_cache import EncodingCache
from storyloop.generation.flux import group_rows, predict, write_grouped_reference_cache
from storyloop.generation.gsa import POSITION_SCHEME, install_gsa
from storyloop.generation.lora import adapter_off, add_lora, load_lora, lora_config, save_lora
from storyloop.generation.models import LoraMeta, ModelError, base_identity, load_flux
from storyloop.generation.reference_gain import (add_reference_gain, gain_parameters, reference_gain_state,
                                                  set_reference_gain_state)
from storyloop.generation.memory import apply_memory_plan
from storyloop.generation.memory_estimate import Workload
from storyloop.generation.stage1 import sample_sigmas
from storyloop.generation.training import (RunClock, accelerate_precision, hold_sigterm, make_lr_scheduler,
                                           make_optimizer, plan_for, sigterm_raises, use_checkpointing, weight_dtype)
from storyloop.hashing import sha256_path
from storyloop.provenance import code_version
from storyloop.settings import Settings

ADAPTER = "dpo"
STAGE1 = "stage1"


def dpo_velocities(transformer, batch: PairBatchTensors, noise: torch.Tensor, sigmas: torch.Tensor,
                   guidance: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(policy, reference, target) velocities for the winners then the losers of a batch ([2B, L, C]).

    One no-grad reference pass with the DPO LoRA off feeds both the policy and the reference forward.
    """
    b = batch.winners.shape[0]
    s = sigmas.view(-1, 1, 1).to(noise.dtype)
    tokens = torch.cat([(1 - s) * batch.winners + s * noise, (1 - s) * batch.losers + s * noise])
    target = torch.cat([noise - batch.winners, noise - batch.losers])
    sig2, text2 = torch.cat([sigmas, sigmas]), batch.text.cat(batch.text)
    cache, index, grid = None, None, batch.grid
    with torch.no_grad(), adapter_off(transformer, ADAPTER):
        if batch.refs is not None:
            n = batch.refs_per_pair
            cache = write_grouped_reference_cache(transformer, batch.refs, n, guidance)
            if isinstance(n, int):
                index = torch.arange(b * n, device=tokens.device).view(b, n).repeat(2, 1)
            else:  # one, two or three characters' references: each pair reads its own rows of a packed cache
                index = group_rows(n) * 2
        reference = predict(transformer, tokens, sig2, text2, grid, guidance, cache, index)
    policy = predict(transformer, tokens, sig2, text2, grid, guidance, cache, index)
    return policy, reference, target


def dpo_loss_for_batch(transformer, batch: PairBatchTensors, noise, sigmas, config: DPOConfig):
    policy, reference, target = dpo_velocities(transformer, batch, noise, sigmas, config.guidance_scale)
    b = batch.winners.shape[0]
    err, ref_err = velocity_error(policy, target), velocity_error(reference, target)
    loss, metrics = diffusion_dpo_loss(err[:b], err[b:], ref_err[:b], ref_err[b:], config.beta)
    if config.rpo_alpha:  # pull towards the winners themselves too, not only away from the losers
        loss = loss + config.rpo_alpha * err[:b].mean()
        metrics["sft_loss"] = err[:b].detach().mean()
    return loss, metrics


@dataclass
class RoundModel:
    pipe: object
    base: str
    stage1_sha256: str | None


def load_policy(rnd, config: DPOConfig, device, dtype, quantization: str | None = None) -> RoundModel:
    """Base (quantised when asked) + frozen Stage-1 + a fresh zero-initialised DPO LoRA, with GSA installed."""
    spec = config.model or rnd.base_model
    if not spec:
        raise DPOError(f"round {rnd.name!r} records no base model: set --model")
    pipe = load_flux(spec, dtype=dtype, device=device, quantization=quantization)
    base = base_identity(spec)
    transformer = pipe.transformer
    adapters = []
    if rnd.stage1_lora_path:
        if sha256_path(rnd.stage1_lora_path) != rnd.stage1_lora_sha256:
            raise DPOError(f"Stage-1 LoRA {rnd.stage1_lora_path} changed since round {rnd.name!r} was created")
        load_lora(pipe, Path(rnd.stage1_lora_path), STAGE1, base, "stage1")
        adapters.append(STAGE1)
    add_dpo_adapter(transformer, config, frozen=adapters)
    install_gsa(transformer)
    return RoundModel(pipe, base.fingerprint, rnd.stage1_lora_sha256)


def add_dpo_adapter(transformer, config: DPOConfig, frozen: list[str]) -> None:
    """A fresh zero-initialised DPO LoRA (and reference gain) over the `frozen` adapters; only it trains."""
    torch.manual_seed(config.seed)
    add_lora(transformer, lora_config(config.rank, config.lora_alpha, init=True), ADAPTER)
    transformer.set_adapters(frozen + [ADAPTER])
    if config.train_reference_gain:
        add_reference_gain(transformer, ADAPTER)
    # set_adapters marks every active adapter trainable again: only the DPO LoRA (and gain) may learn.
    for name, p in transformer.named_parameters():
        p.requires_grad_(f".{ADAPTER}." in name and (config.train_lora or "reference_gains" in name))


@dataclass
class EvalResult:
    """What an evaluator may return instead of a bare score: the score and the figures behind it,
    logged next to eval/score."""

    score: float
    metrics: dict[str, float] = field(default_factory=dict)


# (transformer with the DPO adapter active, step) -> score (higher is better) or an EvalResult
Evaluator = Callable[[object, int], "float | EvalResult"]


class HeldOutPairs:
    """The evaluator behind eval_split: the DPO loss on every pair of the held-out scenarios.

    Each pair has its own fixed noise and noise level (seeded by its place in the list), so scores at different
    steps differ only through the policy, and neither the chunk size (eval_batch_size) nor the number of
    processes changes them; at step 0 the loss is exactly log 2. The processes take the chunks in turn and add
    up their sums, so every process gets the same score. The score is minus the loss (higher is better, as
    `load_best_model_at_end` expects); its metrics are eval/loss and the reward accuracy.
    """

    def __init__(self, data: PairData, pairs: list[tuple[int, int, int]], config: DPOConfig,
                 accelerator: Accelerator, dtype, scheduler_config: dict):
        self.data, self.pairs, self.config, self.accelerator, self.dtype = data, pairs, config, accelerator, dtype
        self.scheduler_config = scheduler_config

    def _noise(self, index: int, batch: PairBatchTensors, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair `index`'s noise (row `row` of `batch`'s shape) and noise level."""
        c = self.config
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([c.seed, index]).generate_state(1)[0]))
        sigma = sample_sigmas(1, batch.num_tokens, self.scheduler_config, c.logit_mean, c.logit_std, gen)
        return torch.randn(batch.winners[row:row + 1].shape, generator=gen), sigma

    def __call__(self, transformer, step: int) -> EvalResult:
        c, acc, n = self.config, self.accelerator, len(self.pairs)
        size = c.eval_batch_size or c.train_batch_size
        starts = list(range(0, n, size))[acc.process_index::acc.num_processes]
        sums = torch.zeros(2, dtype=torch.float64, device=acc.device)  # loss and accuracy, weighted by pairs
        for start in starts:
            chunk = self.pairs[start:start + size]
            batch = assemble(self.data, chunk).to(acc.device, self.dtype)
            noise, sigmas = zip(*(self._noise(start + i, batch, i) for i in range(len(chunk))))
            value, metrics = dpo_loss_for_batch(transformer, batch, torch.cat(noise).to(acc.device, self.dtype),
                                                torch.cat(sigmas).to(acc.device), c)
            sums += torch.stack([value.detach().to(sums), metrics["rewards/accuracies"].to(sums)]) * len(chunk)
        if acc.num_processes > 1:
            sums = acc.reduce(sums, "sum")
        loss, accuracy = (sums / n).tolist()
        return EvalResult(-loss, {"eval/loss": loss, "eval/rewards/accuracies": accuracy})


class DPOTrainer:
    def __init__(self, config: DPOConfig, settings: Settings, evaluate: Evaluator | None = None):
        if config.eval_steps and evaluate is None and not config.eval_split:
            raise DPOError("eval_steps needs something to score: set eval_split (held-out pairs) or pass an "
                           "evaluate callback (Python API)")
        if config.eval_split and evaluate is not None:
            raise DPOError("eval_split and an evaluate callback would both score the policy: choose one")
        self.config, self.settings, self.evaluate = config, settings, evaluate
        self.out = Path(config.output_dir)
        self.best: tuple[float, int, tuple] | None = None  # (score, step, (LoRA state, gain state))

    # -- setup -------------------------------------------------------------------------------------
    def _open_run(self, resume: bool) -> None:
        """Accelerator, pools and the run's DB row: from here on a failure is recorded on the run."""
        c = self.config
        self.precision = accelerate_precision(c)
        self.accelerator = Accelerator(
            mixed_precision=self.precision, gradient_accumulation_steps=c.gradient_accumulation_steps,
            log_with=None if c.report_to == "none" else c.report_to,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")))
        self.weight_dtype = weight_dtype(self.precision)
        with read_scope(self.settings.db_url) as session:  # every process reads; none waits for a writer
            self.round = get_round(session, c.round)
            self.pools = round_pools(session, c.round, AggregationPolicy(
                c.min_agreement, min_votes=c.min_votes, complete_only=c.complete_only, include_gold=c.include_gold))
        self.train_pools, self.eval_pools = split_scenarios(self.pools, c.eval_split, c.seed)
        self.sampler = PairSampler(self.train_pools, seed=c.seed, level_weights=c.level_weights)
        self.run_id = self._start_run(resume)

    def _load(self) -> None:
        """Check the pairs, load the policy, encode what the pairs need."""
        c = self.config
        if self.sampler.epoch_size == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in self.pools.scenarios_without_pairs.items() if v)
            raise DPOError(f"round {c.round!r} has no usable pairs ({self.pools.judgments} judgment(s); "
                           f"{reasons or 'no judgments'})")
        acc = self.accelerator
        with read_scope(self.settings.db_url) as session:
            rnd = get_round(session, c.round)
            work = Workload(c.resolution, c.resolution, self._references(session), c.train_batch_size, c.rank,
                            c.max_sequence_length)
        # the round's base unless --model says otherwise; a mode the GPU cannot hold is refused before loading
        self.plan = plan_for(c, c.model or rnd.base_model or "", "dpo", acc.device, work)
        self.model = load_policy(rnd, c, acc.device, self.weight_dtype, self.plan.quantization)
        with read_scope(self.settings.db_url) as session:
            cache = EncodingCache(self.out / "cache", f"{self.model.base}|{c.resolution}|{c.max_sequence_length}",
                                  dtype=self.weight_dtype)
            encode = partial(encode_pairs, session, self.model.pipe, self.settings.store_dir, self.pools, cache,
                             c.resolution, c.max_sequence_length, progress=acc.is_local_main_process)
            if acc.num_processes > 1:  # each process encodes its share into the cache, then all read it whole
                encode(shard=(acc.process_index, acc.num_processes))
                acc.wait_for_everyone()
            self.data: PairData = encode()
        apply_memory_plan(self.model.pipe, self.plan, "dpo")  # the encoders (and VAE) leave the GPU if the mode says
        if c.train_batch_size > 1 and len(self.data.grids) > 1:  # a batch shares one noise shape
            sizes = ", ".join(f"{w}x{h}" for h, w in sorted(self.data.grids))
            raise DPOError(f"round {c.round!r} has candidates of several sizes ({sizes} tokens) and the pairs of "
                           "one batch must share one: set train_batch_size = 1 (and gradient_accumulation_steps "
                           "for a larger effective batch)")
        if c.eval_split and (c.eval_batch_size or c.train_batch_size) > 1 and len(self.data.grids) > 1:
            sizes = ", ".join(f"{w}x{h}" for h, w in sorted(self.data.grids))
            raise DPOError(f"round {c.round!r} has candidates of several sizes ({sizes} tokens) and the held-out "
                           "pairs scored together must share one: set eval_batch_size = 1")
        self.eval_pairs = every_pair(self.eval_pools)  # none without eval_split
        if c.eval_split:
            self.evaluate = HeldOutPairs(self.data, self.eval_pairs, c, self.accelerator, self.weight_dtype,
                                         dict(self.model.pipe.scheduler.config))

    def _on_main(self, fn: Callable[[], object]) -> object:
        """fn() on the main process only, its result given to every process; its error raised everywhere."""
        box: list = [None]
        if self.accelerator.is_main_process:
            try:
                box = [(True, fn())]
            except Exception as exc:
                box = [(False, exc)]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(box)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _references(self, session) -> int:
        """The most references a scenario of the pools has (what the memory estimate needs)."""
        ids = sorted(set(self.pools.members.scenario_id.tolist()))
        counts = session.execute(select(func.count()).select_from(ScenarioReference)
                                 .where(ScenarioReference.scenario_id.in_(ids))
                                 .group_by(ScenarioReference.scenario_id)).scalars().all()
        return max(counts, default=0)

    def _start_run(self, resume: bool) -> int:
        """The run's DB row and run.json, written by the main process alone."""
        return self._on_main(lambda: self._write_run(resume))

    def _write_run(self, resume: bool) -> int:
        record = self.out / "run.json"
        with session_scope(self.settings.db_url) as session:
            if resume and record.exists():
                run = session.get(DpoRun, json.loads(record.read_text())["run_id"])
                if run is not None:
                    if run.pair_set_sha256 != self.sampler.fingerprint():
                        raise DPOError(f"the pairs of round {self.config.round!r} changed since run {run.id} "
                                       "started: start a new run instead of --resume")
                    run.status, run.failure_reason, run.finished_at = RunStatus.running, None, None
                    return run.id
            run = DpoRun(round_id=self.round.id, status=RunStatus.running, config=_jsonable(asdict(self.config)),
                         pair_set_sha256=self.sampler.fingerprint(), code_version=code_version())
            session.add(run)
            session.flush()
            run_id = run.id
        self.out.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"run_id": run_id}))
        return run_id

    # -- training ----------------------------------------------------------------------------------
    def train(self, resume: bool = False, progress: bool = True) -> Path:
        with sigterm_raises():  # a run stopped by torchrun (another rank died) or a scheduler is marked failed
            self._open_run(resume)
            try:
                self._load()
                return self._train(resume, progress)
            except BaseException as exc:
                hold_sigterm()  # stopping already: a second SIGTERM must not cut the record short
                try:
                    self._finish(RunStatus.failed, reason=f"{type(exc).__name__}: {exc}"[:2000])
                except Exception as record_error:  # (the database is away too): the first error is the story
                    exc.add_note(f"the run could not be marked failed: {type(record_error).__name__}: {record_error}")
                raise

    def _train(self, resume: bool, progress: bool) -> Path:
        c, acc = self.config, self.accelerator
        transformer = self.model.pipe.transformer
        if use_checkpointing(c, self.plan):
            transformer.enable_gradient_checkpointing()
        cast_training_params(transformer, dtype=torch.float32)
        transformer.train()
        params = [p for p in transformer.parameters() if p.requires_grad]
        gain = {id(p) for p in gain_parameters(transformer, ADAPTER)}
        groups = [{"params": [p for p in params if id(p) not in gain]}]
        if gain:  # a handful of numbers: they move at their own, much larger rate
            groups.append({"params": [p for p in params if id(p) in gain], "lr": c.reference_gain_learning_rate})
        optimizer = make_optimizer(groups, c, self.plan, c.learning_rate, c.adam_weight_decay)
        step = resume_latest(transformer, ADAPTER, optimizer, self.out) if resume else 0
        lr_scheduler = make_lr_scheduler(optimizer, c, c.max_steps, start_step=step)
        transformer, optimizer = acc.prepare(transformer, optimizer)
        clock = RunClock(acc.device)
        if acc.is_main_process and c.report_to != "none":
            acc.init_trackers("dpo", config=_jsonable(asdict(c)))
        sched_cfg = dict(self.model.pipe.scheduler.config)
        bar = tqdm(total=c.max_steps, initial=step, desc="dpo", unit="step",
                   disable=not (progress and acc.is_local_main_process))
        recent = deque(maxlen=50)  # the bar shows running means: one micro-batch's accuracy is too noisy
        while step < c.max_steps:
            totals: dict[str, float] = {}
            for micro in range(c.gradient_accumulation_steps):
                first = (step * c.gradient_accumulation_steps + micro) * c.train_batch_size
                pairs = [self.sampler.pair_at(first + i, acc.process_index, acc.num_processes)
                         for i in range(c.train_batch_size)]
                batch = assemble(self.data, pairs).to(acc.device, self.weight_dtype)
                # Noise and noise levels of the global batch (world x B pairs) from one stream, a pure function
                # of (seed, step, micro); process p's pair i is the global batch's pair i * world + p (the
                # sampler deals pairs out that way), so P processes of batch B train as one of batch P x B.
                # The trailing 0 keeps one process's stream as it always was.
                key = [c.seed, step, micro, 0]
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
                # (Candidates of several sizes: each process draws at its own pair's size, so the equivalence
                # holds where the global batch's pairs share one size.)
                world, mine = acc.num_processes, slice(acc.process_index, None, acc.num_processes)
                sigmas = sample_sigmas(world * c.train_batch_size, batch.num_tokens, sched_cfg, c.logit_mean,
                                       c.logit_std, gen)[mine].to(acc.device)
                noise = torch.randn((world * c.train_batch_size, *batch.winners.shape[1:]),
                                    generator=gen)[mine].to(acc.device, self.weight_dtype)
                with acc.accumulate(transformer):
                    loss, metrics = dpo_loss_for_batch(transformer, batch, noise, sigmas, c)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        grad_norm = acc.clip_grad_norm_(params, c.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                for k, v in acc.reduce(metrics, "mean").items():  # over processes: the global batch's figures
                    totals[k] = totals.get(k, 0.0) + float(v) / c.gradient_accumulation_steps
            step += 1
            learning_rate = lr_scheduler.get_last_lr()[0]  # the rate this step used
            lr_scheduler.step()
            clock.step()
            logs = {**totals, "grad_norm": float(grad_norm), "learning_rate": learning_rate,
                    "epoch": step * c.gradient_accumulation_steps * c.train_batch_size / self.sampler.epoch_size}
            if gain_state := reference_gain_state(acc.unwrap_model(transformer), ADAPTER):
                logs["reference_gain/mean"] = float(torch.cat(list(gain_state.values())).mean())
            if c.eval_steps and (step % c.eval_steps == 0 or step == c.max_steps):
                result = self._evaluate(acc.unwrap_model(transformer), step)
                logs.update({"eval/score": result.score, **result.metrics})
            if step % c.logging_steps == 0 or step == c.max_steps or "eval/score" in logs:
                acc.log(logs, step=step)
                self._log_metrics(step, logs)
            bar.update(1)
            recent.append((logs["loss"], logs["rewards/accuracies"]))
            bar.set_postfix(loss=f"{np.mean([r[0] for r in recent]):.4f}", acc=f"{np.mean([r[1] for r in recent]):.2f}")
            if step % c.save_steps == 0 or step == c.max_steps:
                if acc.is_main_process:  # every process holds the same adapter and optimizer state
                    save_checkpoint(acc.unwrap_model(transformer), ADAPTER, optimizer, self.out, step,
                                    c.save_total_limit)
                acc.wait_for_everyone()
        bar.close()
        acc.wait_for_everyone()
        lora_dir = self.out / "lora"
        if c.load_best_model_at_end and self.best is not None:
            _, step, (state, gain_state) = self.best
            set_peft_model_state_dict(acc.unwrap_model(transformer), state, adapter_name=ADAPTER)
            if gain_state:
                set_reference_gain_state(acc.unwrap_model(transformer), ADAPTER, gain_state)
        if acc.is_main_process:
            meta = LoraMeta("dpo", self.model.base, POSITION_SCHEME, c.rank, c.lora_alpha, step,
                            extra={"stage1_sha256": self.model.stage1_sha256,
                                   "pair_set_sha256": self.sampler.fingerprint(), "round": c.round,
                                   "eval_pairs": len(self.eval_pairs),
                                   "reference_gain": c.train_reference_gain,
                                   "code_version": code_version(), "config": _jsonable(asdict(c)),
                                   "best_eval": None if self.best is None else
                                   {"score": self.best[0], "step": self.best[1]}})
            save_lora(acc.unwrap_model(transformer), ADAPTER, lora_dir, meta)
        acc.end_training()
        if acc.is_main_process:
            clock.write(self.out, memory=self.plan.mode.name, quantization=self.plan.quantization,
                        precision=self.precision, processes=acc.num_processes,
                        tokens_per_image=max(h * w for h, w in self.data.grids))
        hold_sigterm()  # done: a SIGTERM now must not turn the completed run into a failed one
        self._finish(RunStatus.completed, artifact=str(lora_dir.resolve()))
        return lora_dir

    def _evaluate(self, transformer, step: int) -> EvalResult:
        """Score the current adapter (eval mode, no grad) and remember the best state (first on ties)."""
        transformer.eval()
        with torch.no_grad():
            result = self.evaluate(transformer, step)
        transformer.train()
        if not isinstance(result, EvalResult):
            result = EvalResult(float(result))
        if self.best is None or result.score > self.best[0]:
            adapter = get_peft_model_state_dict(transformer, adapter_name=ADAPTER)
            state = {k: v.detach().clone() for k, v in adapter.items()}
            self.best = (result.score, step, (state, reference_gain_state(transformer, ADAPTER)))
        return result

    # -- records -----------------------------------------------------------------------------------
    def _log_metrics(self, step: int, logs: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        with session_scope(self.settings.db_url) as session:
            exists = session.scalar(select(DpoMetric.id).where(DpoMetric.run_id == self.run_id,
                                                              DpoMetric.step == step))
            if exists is None:  # a resumed run replays identical steps: keep the first record
                session.add(DpoMetric(run_id=self.run_id, step=step, values=logs))

    def _finish(self, status: RunStatus, reason: str | None = None, artifact: str | None = None) -> None:
        if not hasattr(self, "run_id") or not self.accelerator.is_main_process:
            return
        with session_scope(self.settings.db_url) as session:
            run = session.get(DpoRun, self.run_id)
            run.status, run.failure_reason, run.finished_at = status, reason, utcnow()
            if artifact:
                run.artifact_path = artifact


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=list))


def train_dpo(config: DPOConfig, settings: Settings, resume: bool = False, progress: bool = True,
              evaluate: Evaluator | None = None) -> Path:
    """Train the DPO LoRA for `config.round`; returns the saved LoRA folder."""
    return DPOTrainer(config, settings, evaluate).train(resume, progress)


__all__ = ["DPOConfig", "DPOError", "DPOTrainer", "EvalResult", "train_dpo", "dpo_velocities", "RoundError", "ModelError"]
