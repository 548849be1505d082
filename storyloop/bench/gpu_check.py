"""`python -m storyloop.bench.gpu_check`: what only a GPU can measure, through the commands users run.

`scripts/gpu_check.sh` runs this (after installing what the GPU machine lacks from ./wheels). With
random weights (nothing downloads) it saves a FLUX.1-dev-shaped pipeline once (`storyloop.bench.random_flux`;
to /dev/shm when it has room, else the temp dir), then for each memory mode (full, 80gb, 24gb) runs, each as its own
`python -m storyloop.cli.main ...` process:

  stage1    generate train-stage1 at 512^2 with 2 references, a few steps  -> OUTPUT_DIR/summary.json
  dpo       dpo train on a judged round at 512^2 with 2 references         -> OUTPUT_DIR/summary.json
  generate  generate run at 1024^2, 2 references, 2 scenarios x 2 candidates, few steps -> its --json line

and once: `bench gsa --config flux1-dev` (1024^2, N = 0..3) and `bench dpo --config flux1-dev` (512^2,
2 references). The 24gb mode quantises the base to NF4 when bitsandbytes imports, else to fp8 with
torchao (the wheelhouse cannot carry bitsandbytes); the JSON says which.

The last line of stdout is one JSON object (also written, phase by phase, to $OUT/gpu_check.json
when $OUT is set, else RUN_DIR/gpu_check.json, so a run cut short still leaves its figures):

  stage1_step_s         {mode: median s per Stage-1 optimizer step, first step excluded}
  dpo_step_s            {mode: median s per DPO optimizer step, first step excluded}
  generate_s_per_image  {mode: `generate run --json`'s s_per_image: its seconds (after loading: text
                         and reference encoding, sampling, VAE decode, PNG writes) / images made}
  gsa_cached_over_plain {"N": cached GSA step / plain FLUX step at 1024^2} for N = 0..3 references
  peak_gb               {mode: {stage1, dpo, generate: torch.cuda.max_memory_allocated, GiB}}
  estimated_gb          {mode: {stage1, dpo, generate: `storyloop bench memory`'s estimate for the
                         same workload, mode and quantisation}}
  mfu                   {mode: {stage1, dpo, generate: model FLOP/s / 790 TFLOP/s}}; the FLOPs are
                         those of storyloop.bench.flops (forward from FLUX's linears and attention;
                         training = 2x linears + 3x attention, the base being frozen; recomputation
                         not counted)
  model_tflops          {mode: {use: achieved model TFLOP/s}} (on any device)
  plus timings_s per phase, errors and skipped phases, versions, the device, the full outputs
  of every command (runs, bench_gsa, bench_dpo) and the FLOPs each figure divides.

`--cpu-smoke` runs the same steps with the tiny pipeline (storyloop.generation.tiny's sizes) on the
CPU in float32: GPU-only figures (peak_gb, mfu) are null there, with `not_measured` saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from storyloop.generation.memory import MODES, USES, installed

PHASES = ("stage1", "dpo", "generate", "gsa", "bench-dpo")
MODE_PHASES = ("stage1", "dpo", "generate")
REFS = 2
RANK = 16
TEXT_TOKENS = 512  # max_sequence_length of every command (FLUX.1-dev's T5 length)
NOT_ON_GPU = "not measured on a GPU"
MIN_PHASE_S = 20.0  # a phase is not started with less time than this left
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Profile:
    """Sizes and step counts of one kind of check."""

    shape: str  # random pipeline (storyloop.bench.random_flux.SHAPES)
    bench_config: str  # config of bench gsa / dpo / memory (storyloop.bench.gsa.CONFIGS)
    device: str
    dtype: str
    mixed_precision: str  # the trainers' knob: bf16 on a GPU
    train_resolution: int
    generate_resolution: int
    stage1_steps: int  # the first is excluded from step_s: at least 2
    dpo_steps: int
    generate_steps: int  # denoising steps
    scenarios: int  # per generate round
    candidates: int  # per scenario, denoised as one batch
    gsa_max_refs: int
    gsa_steps: int
    bench_dpo_steps: int
    bench_dpo_resolution: int
    budget_s: float  # phases are not started past this (the device command's limit is 600 s)


GPU = Profile("flux1-dev", "flux1-dev", "cuda", "bfloat16", "bf16", train_resolution=512, generate_resolution=1024,
              stage1_steps=4, dpo_steps=4, generate_steps=4, scenarios=2, candidates=2, gsa_max_refs=3, gsa_steps=3,
              bench_dpo_steps=3, bench_dpo_resolution=512, budget_s=560.0)
SMOKE = Profile("tiny", "tiny", "cpu", "float32", "no", train_resolution=32, generate_resolution=64,
                stage1_steps=2, dpo_steps=2, generate_steps=2, scenarios=2, candidates=2, gsa_max_refs=0, gsa_steps=2,
                bench_dpo_steps=1, bench_dpo_resolution=64, budget_s=600.0)


class PhaseFailed(RuntimeError):
    """A command of a phase failed or ran out of time: recorded, and the check goes on."""


def _per_mode(modes) -> dict:
    return {m: None for m in modes}


def _per_use(modes) -> dict:
    return {m: {u: None for u in USES} for m in modes}


class GpuCheck:
    def __init__(self, profile: Profile, modes: list[str], phases: list[str], workdir: Path, json_out: Path | None,
                 quantization_24gb: str, t5_layers: int | None, smoke: bool):
        self.profile, self.modes, self.phases, self.smoke = profile, modes, phases, smoke
        self.workdir = workdir
        self.run_dir = workdir / time.strftime("run-%Y%m%d-%H%M%S")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.run_dir / "data"
        self.model_dir = workdir / f"model-{profile.shape}"
        self.lora_dir = workdir / f"stage1-lora-{profile.shape}"
        self.log_path = self.run_dir / "gpu_check.log"
        out = os.environ.get("OUT")
        self.json_out = json_out or (Path(out) / "gpu_check.json" if out else self.run_dir / "gpu_check.json")
        self.t5_layers = t5_layers
        self.start = time.monotonic()
        self.password = os.environ.get("STORYLOOP_ADMIN_PASSWORD") or os.urandom(12).hex()
        self._ready: set[str] = set()
        self._lock = threading.RLock()  # the log, the JSON and the result, shared by the smoke's parallel jobs
        self.quantization = {m: self._quantization(m, quantization_24gb) for m in modes}
        self.result: dict = {
            "check": "cpu-smoke" if smoke else "gpu", "device": profile.device, "profile": asdict(profile),
            "modes": modes, "phases": phases, "quantization": dict(self.quantization),
            "stage1_step_s": _per_mode(modes), "dpo_step_s": _per_mode(modes),
            "generate_s_per_image": _per_mode(modes), "gsa_cached_over_plain": None,
            "peak_gb": _per_use(modes), "estimated_gb": _per_use(modes), "mfu": _per_use(modes),
            "model_tflops": _per_use(modes), "peak_bf16_tflops": None, "flops": {}, "runs": _per_use(modes),
            "bench_gsa": None, "bench_dpo": None, "timings_s": {}, "errors": {}, "skipped": {},
            "notes": [], "not_measured": {}, "run_dir": str(self.run_dir),
        }
        if smoke:
            self.result["not_measured"] = {"peak_gb": NOT_ON_GPU, "mfu": NOT_ON_GPU, "matmul_tflops": NOT_ON_GPU}
        if "24gb" in modes:
            self.result["notes"].append(self._quantization_note(self.quantization["24gb"], quantization_24gb))

    # -- bookkeeping ---------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.profile.budget_s - self.elapsed()

    def say(self, message: str) -> None:
        line = f"[gpu-check {self.elapsed():6.1f}s] {message}"
        with self._lock:
            print(line, file=sys.stderr, flush=True)
            with open(self.log_path, "a") as fh:
                fh.write(line + "\n")

    def save(self) -> None:
        """The result so far, as the JSON a finished run prints (a timeout still leaves this file)."""
        with self._lock:
            self._save()

    def _save(self) -> None:
        self.result["total_s"] = round(self.elapsed(), 1)
        self.json_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.json_out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1))
        tmp.replace(self.json_out)
        if os.environ.get("OUT"):
            shutil.copyfile(self.log_path, Path(os.environ["OUT"]) / "gpu_check.log")

    def phase(self, key: str, fn) -> None:
        """Run one phase: timed, its failure recorded (the check goes on), the JSON saved after it."""
        if self.left() < MIN_PHASE_S:
            with self._lock:
                self.result["skipped"][key] = f"out of time ({self.elapsed():.0f} s of {self.profile.budget_s:.0f})"
            self.say(f"{key}: skipped, out of time")
            self.save()
            return
        started = time.monotonic()
        self.say(f"{key}: start")
        try:
            fn()
        except Exception as exc:  # a failing phase must not lose the figures of the others
            detail = str(exc) if isinstance(exc, PhaseFailed) else traceback.format_exc(limit=4)
            # short enough that the JSON line stays whole in a 12,000-character output tail; the log has it all
            with self._lock:
                self.result["errors"][key] = f"{type(exc).__name__}: {detail}"[-1200:]
            self.say(f"{key}: FAILED: {detail[-1500:]}")
        seconds = time.monotonic() - started
        with self._lock:
            self.result["timings_s"][key] = round(seconds, 1)
        self.say(f"{key}: done in {seconds:.1f} s")
        self.save()

    # -- running storyloop -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   STORYLOOP_ADMIN_PASSWORD=self.password, STORYLOOP_CACHE_DIR=str(self.workdir / "cache"),
                   PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]))
        if self.smoke:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the smoke is the CPU path, on any machine
            env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: threads only contend on a shared CPU
        return env

    def cli(self, *args) -> str:
        """`storyloop ARGS` in its own process; its stdout. Output goes to the log; a failure or running past
        the budget raises PhaseFailed with the end of stderr."""
        args = [str(a) for a in args]
        cmd = [sys.executable, "-m", "storyloop.cli.main", *args]
        timeout = max(self.left(), 1.0)
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own group: a timeout ends bench workers too
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            self._log_output(args, out, err, "killed: out of time")
            raise PhaseFailed(f"storyloop {' '.join(args[:2])} ran out of time after {timeout:.0f} s") from None
        seconds = time.monotonic() - started
        self._log_output(args, out, err, f"exit {proc.returncode} after {seconds:.1f} s")
        if proc.returncode != 0:
            tail = "\n".join(err.strip().splitlines()[-25:])
            raise PhaseFailed(f"storyloop {' '.join(args)} exited {proc.returncode}:\n{tail}")
        return out

    def _log_output(self, args, out: str, err: str, status: str) -> None:
        with self._lock, open(self.log_path, "a") as fh:
            fh.write(f"\n$ storyloop {' '.join(args)}\n--- stdout\n{out}\n--- stderr\n{err}\n--- {status}\n")

    def data_args(self) -> list[str]:
        return ["--data-dir", str(self.data_dir)]

    # -- setup -----------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Versions and the device; for the per-mode phases, the random pipeline folder, its Stage-1 LoRA and an
        initialised database (bench gsa and bench dpo build their own models)."""
        import torch

        from storyloop.bench import check_data
        from storyloop.bench.random_flux import SHAPES, save_random_lora, save_random_pipeline
        from storyloop.generation.models import base_fingerprint

        p = self.profile
        self.result["versions"] = versions()
        self.result.update(device_facts(p.device))
        if not set(self.phases) & set(MODE_PHASES):
            return
        dtype = getattr(torch, p.dtype)
        shape = SHAPES[p.shape]
        started = time.monotonic()
        folder, built = save_random_pipeline(self.model_dir, shape, check_data.words(), p.device, dtype,
                                             self.t5_layers, log=self.say)
        self.result["timings_s"]["setup/model"] = round(time.monotonic() - started, 1)
        self.say(f"model folder {folder} ({'built' if built else 'reused'}, {folder_gb(folder):.1f} GB)")
        if built or not (self.lora_dir / "storyloop_lora.json").is_file():
            started = time.monotonic()
            base = base_fingerprint(str(folder))
            self.result["timings_s"]["setup/base_fingerprint"] = round(time.monotonic() - started, 1)
            shutil.rmtree(self.lora_dir, ignore_errors=True)
            save_random_lora(self.lora_dir, shape.transformer, base, RANK, p.device, dtype)
        self.cli("init", *self.data_args())
        self.transformer_config = json.loads((folder / "transformer" / "config.json").read_text())
        vae_config = json.loads((folder / "vae" / "config.json").read_text())
        self.pixels_per_token = 2 ** (len(vae_config["block_out_channels"]) - 1) * 2  # VAE factor, 2x2 packing

    def _quantization(self, mode: str, asked: str) -> str:
        """What the check passes as `quantization` in `mode`: the mode's own (auto), except that the 24gb mode's
        NF4 needs bitsandbytes on CUDA; without it fp8 through torchao stands in."""
        if mode != "24gb":
            return "auto"
        if asked != "auto":
            return asked
        if self.profile.device == "cuda" and installed("bitsandbytes"):
            return "auto"
        return "fp8" if installed("torchao") else "auto"

    def _quantization_note(self, quantization: str, asked: str) -> str:
        from storyloop.generation.memory import QUANTIZATIONS, resolve

        ran = resolve("24gb", self.profile.device, quantization).quantization
        what = f"quantization={ran}: {QUANTIZATIONS[ran].help}"
        if ran == MODES["24gb"].quantization:
            return f"24gb: the mode's own base, {what}"
        why = ("asked with --quantization-24gb" if asked != "auto" else
               "NF4 runs on CUDA only" if self.profile.device != "cuda" else
               "bitsandbytes does not import here (41 MiB: too big to carry, docs/gpu-check.md)")
        return f"24gb: {what}, instead of the mode's nf4: {why}; estimated_gb uses the same quantization"

    def _dataset(self) -> Path:
        from storyloop.bench import check_data

        folder = self.run_dir / "stage1-data"
        if "dataset" not in self._ready:
            check_data.stage1_dataset(folder, self.profile.train_resolution)
            self._ready.add("dataset")
        return folder

    def _round(self, name: str, resolution: int, scenarios: int, candidates: int) -> str:
        """A round of the check's model and Stage-1 LoRA, created through `storyloop round create`."""
        from storyloop.bench import check_data

        if name not in self._ready:
            src = check_data.scenarios_file(self.run_dir / name, resolution, scenarios, REFS, candidates)
            self.cli("round", "create", name, "--scenarios", src, "--base-model", self.model_dir,
                     "--stage1-lora", self.lora_dir, *self.data_args())
            self._ready.add(name)
        return name

    def _judged_round(self) -> str:
        from storyloop.bench import check_data
        from storyloop.settings import Settings

        name = "check-dpo"
        if f"{name}:judged" not in self._ready:
            self._round(name, self.profile.train_resolution, scenarios=2, candidates=4)
            written = check_data.judge_round(Settings.resolve(self.data_dir).db_url, name)
            self._ready.add(f"{name}:judged")
            self.say(f"round {name}: {written} judgments written")
        return name

    # -- the measured phases -----------------------------------------------------------------------------

    def _train_settings(self, mode: str, steps: int, checkpoint_key: str) -> list[str]:
        p = self.profile
        sets = {"memory": mode, "quantization": self.quantization[mode], "resolution": p.train_resolution,
                "rank": RANK, "report_to": "none", checkpoint_key: steps}
        if p.mixed_precision != "no":  # (`--set mixed_precision=no` reads as YAML's false: leave the default)
            sets["mixed_precision"] = p.mixed_precision
        return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]

    def stage1(self, mode: str) -> None:
        p, out = self.profile, self.run_dir / f"stage1-{mode}"
        self.cli("generate", "train-stage1", "--model", self.model_dir, "--dataset", self._dataset(),
                 "--output-dir", out, "--max-train-steps", p.stage1_steps, "--set", f"num_references={REFS}",
                 *self._train_settings(mode, p.stage1_steps, "checkpointing_steps"))
        summary = read_summary(out)
        self._record(mode, "stage1", summary, summary.get("step_s"), self._flops("stage1"))
        self.result["stage1_step_s"][mode] = summary.get("step_s")

    def dpo(self, mode: str) -> None:
        p, out = self.profile, self.run_dir / f"dpo-{mode}"
        self.cli("dpo", "train", "--round", self._judged_round(), "--output-dir", out, "--max-steps", p.dpo_steps,
                 *self._train_settings(mode, p.dpo_steps, "save_steps"), *self.data_args())
        summary = read_summary(out)
        self._record(mode, "dpo", summary, summary.get("step_s"), self._flops("dpo"))
        self.result["dpo_step_s"][mode] = summary.get("step_s")

    def generate(self, mode: str) -> None:
        p = self.profile
        name = self._round(f"check-generate-{mode}", p.generate_resolution, p.scenarios, candidates=0)
        out = self.cli("generate", "run", "--round", name, "-k", p.candidates, "--batch-size", p.candidates,
                       "--steps", p.generate_steps, "--height", p.generate_resolution, "--width",
                       p.generate_resolution, "--memory", mode, "--quantization", self.quantization[mode],
                       "--dtype", "auto", "--json", *self.data_args())
        summary = last_json(out, "generate run --json")
        self._record(mode, "generate", summary, summary.get("seconds"), self._flops("generate"))
        self.result["generate_s_per_image"][mode] = summary.get("s_per_image")

    def gsa(self) -> None:
        p = self.profile
        out = self.cli("bench", "gsa", "--config", p.bench_config, "--max-refs", p.gsa_max_refs, "--steps",
                       p.gsa_steps, "--device", p.device, "--json")
        bench = last_json(out, "bench gsa --json")
        self.result["bench_gsa"] = bench
        self.result["gsa_cached_over_plain"] = {str(n): r for n, r in zip(bench["refs"], bench["cached_over_plain"])}

    def bench_dpo(self) -> None:
        p = self.profile
        out = self.cli("bench", "dpo", "--config", p.bench_config, "--refs", REFS, "--resolution",
                       p.bench_dpo_resolution, "--steps", p.bench_dpo_steps, "--device", p.device, "--json")
        self.result["bench_dpo"] = last_json(out, "bench dpo --json")

    def _flops(self, use: str):
        from storyloop.bench import flops

        p, cfg = self.profile, self.transformer_config
        train = (p.train_resolution // self.pixels_per_token) ** 2
        if use == "stage1":
            count = flops.stage1_step(cfg, TEXT_TOKENS, train, REFS)
        elif use == "dpo":
            count = flops.dpo_step(cfg, TEXT_TOKENS, train, REFS)
        else:
            image = (p.generate_resolution // self.pixels_per_token) ** 2
            count = flops.generate_run(cfg, TEXT_TOKENS, image, REFS, p.scenarios, p.candidates, p.generate_steps)
        with self._lock:
            self.result["flops"][{"stage1": "stage1_step", "dpo": "dpo_step", "generate": "generate_run"}[use]] = \
                count.total
        return count

    def _record(self, mode: str, use: str, summary: dict, seconds: float | None, count) -> None:
        with self._lock:
            self._record_locked(mode, use, summary, seconds, count)

    def _record_locked(self, mode: str, use: str, summary: dict, seconds: float | None, count) -> None:
        from storyloop.bench import flops

        self.result["runs"][mode][use] = summary
        self.result["peak_gb"][mode][use] = summary.get("peak_gb")
        if seconds:
            self.result["model_tflops"][mode][use] = round(count.total / seconds / 1e12, 3)
            if self.profile.device == "cuda":
                self.result["mfu"][mode][use] = round(flops.mfu(count, seconds), 4)
        peak = summary.get("peak_gb")
        self.say(f"{mode}/{use}: {seconds if seconds is None else round(seconds, 3)} s"
                 f"{' per step' if use != 'generate' else ' in all'}, peak "
                 f"{'-' if peak is None else f'{peak:.1f} GB'}, {self.result['model_tflops'][mode][use]} TFLOP/s")

    def estimates(self) -> None:
        """`storyloop bench memory`'s estimate for each mode, with the check's own workload and quantisation."""
        from storyloop.bench.memory import run_memory_bench

        p = self.profile
        for mode in self.modes:
            est = run_memory_bench(p.bench_config, mode, p.train_resolution, REFS, RANK, 1, p.generate_resolution,
                                   p.candidates, self.quantization[mode])
            self.result["estimated_gb"][mode] = est["estimated_gb"]

    # -- the whole check --------------------------------------------------------------------------------

    def run(self) -> int:
        from storyloop.bench.flops import PEAK_BF16_TFLOPS

        self.result["peak_bf16_tflops"] = PEAK_BF16_TFLOPS if self.profile.device == "cuda" else None
        self.say(f"{self.result['check']}: modes {', '.join(self.modes)}; phases {', '.join(self.phases)}; "
                 f"run dir {self.run_dir}; JSON to {self.json_out}")
        self.phase("setup", self.setup)
        self.phase("estimate", self.estimates)  # CPU only and quick: before anything can run out of time
        if "setup" not in self.result["errors"]:
            self.phase("data", self.data)
        jobs = [lambda m=mode: self.mode_phases(m) for mode in self.modes]
        if "gsa" in self.phases:  # the benchmarks build their own models
            jobs.append(lambda: self.phase("gsa", self.gsa))
        if "bench-dpo" in self.phases:
            jobs.append(lambda: self.phase("bench-dpo", self.bench_dpo))
        # On a GPU one command at a time (each measures its own peak and speed); the CPU smoke, which measures
        # neither, runs two at once, one per core of a small machine.
        with ThreadPoolExecutor(max_workers=2 if self.smoke else 1) as pool:
            for done in [pool.submit(job) for job in jobs]:
                done.result()
        self.save()
        return 1 if self.result["errors"] else 0

    def data(self) -> None:
        """The dataset and rounds the modes share, made once before they run (side by side in the smoke)."""
        if "stage1" in self.phases:
            self._dataset()
        if "dpo" in self.phases:
            self._judged_round()
        if "generate" in self.phases:
            for mode in self.modes:
                self._round(f"check-generate-{mode}", self.profile.generate_resolution, self.profile.scenarios,
                            candidates=0)

    def mode_phases(self, mode: str) -> None:
        for use in MODE_PHASES:
            if use not in self.phases:
                continue
            if "setup" in self.result["errors"]:  # no model folder: nothing to run them on
                self.result["skipped"][f"{mode}/{use}"] = "setup failed"
            else:
                self.phase(f"{mode}/{use}", lambda m=mode, u=use: getattr(self, u)(m))


def read_summary(output_dir: Path) -> dict:
    path = Path(output_dir) / "summary.json"
    if not path.is_file():
        raise PhaseFailed(f"{path}: the trainer wrote no summary.json")
    return json.loads(path.read_text())


def last_json(stdout: str, what: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise PhaseFailed(f"{what}: the last line of its output is not JSON: {lines[-1:]!r}") from None


def folder_gb(folder: Path) -> float:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 2**30


def versions() -> dict:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "torchao", "bitsandbytes",
                 "sqlalchemy", "typer", "pydantic", "storyloop"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_facts(device: str) -> dict:
    """The device, and on CUDA a dense bf16 matmul rate to hold the 790 TFLOP/s peak against."""
    import torch

    if device != "cuda":
        return {"device_name": "cpu", "torch_cuda": torch.version.cuda, "matmul_tflops": None}
    props = torch.cuda.get_device_properties(0)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    rate = 10 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
    del a, b
    torch.cuda.empty_cache()
    return {"device_name": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1),
            "torch_cuda": torch.version.cuda, "matmul_tflops": round(rate, 1)}


def default_workdir(smoke: bool) -> Path:
    """Where the model folder goes: /dev/shm when it has room (nothing to write to a disk), else the temp dir."""
    if smoke:
        return Path(tempfile.mkdtemp(prefix="storyloop-gpu-smoke-"))
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 60 * 2**30:
        return shm / "storyloop-gpu-check"
    return Path(tempfile.gettempdir()) / "storyloop-gpu-check"


def _names(value: str, allowed, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{what}: {', '.join(unknown) or 'none given'}; choose from "
                                         f"{', '.join(allowed)}")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="The same steps on the tiny pipeline on the CPU in float32 (under two minutes).")
    parser.add_argument("--modes", type=lambda v: _names(v, tuple(MODES), "--modes"), default=list(MODES),
                        help="Memory modes to measure, comma-separated (default: full,80gb,24gb).")
    parser.add_argument("--only", type=lambda v: _names(v, PHASES, "--only"), default=list(PHASES),
                        help=f"Phases to run, comma-separated, from {','.join(PHASES)} (default: all).")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Model folder and runs (default: /dev/shm/storyloop-gpu-check when it has 60 GB free, "
                             "else the temp dir; a fresh temp dir for --cpu-smoke, removed after).")
    parser.add_argument("--json-out", type=Path, default=None,
                        help="Where the JSON is written as it grows (default: $OUT/gpu_check.json, else the run dir).")
    parser.add_argument("--quantization-24gb", default="auto", choices=("auto", "nf4", "int8", "fp8", "none"),
                        help="Base quantisation in the 24gb mode; auto: NF4 when bitsandbytes imports, else fp8.")
    parser.add_argument("--t5-layers", type=int, default=None,
                        help="T5 depth of the random pipeline (default: the real 24 for FLUX.1-dev).")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="No phase starts after this many seconds (default 560 on a GPU: the device limit is 600).")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    profile = SMOKE if args.cpu_smoke else GPU
    if args.budget_s is not None:
        profile = replace(profile, budget_s=args.budget_s)
    if not args.cpu_smoke:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device here; run `scripts/gpu_check.sh --cpu-smoke` on a CPU", file=sys.stderr)
            return 2
    workdir = args.workdir or default_workdir(args.cpu_smoke)
    check = GpuCheck(profile, args.modes, args.only, workdir, args.json_out, args.quantization_24gb, args.t5_layers,
                     args.cpu_smoke)
    code = check.run()
    if args.cpu_smoke and args.workdir is None:
        if code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            check.say(f"kept {workdir} for a look (its run dir has gpu_check.log, every command's output)")
    print(json.dumps(check.result), flush=True)  # the last line: the whole result
    return code


if __name__ == "__main__":
    sys.exit(main())
