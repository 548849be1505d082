"""Launching storyloop commands as several CPU processes (gloo), as `accelerate launch` does on GPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]


def scale_env() -> dict[str, str]:
    """The environment of a launched storyloop process: gloo on the CPU, one thread, this checkout first."""
    env = dict(os.environ)
    # accelerate's MULTI_CPU mode: accelerator.prepare wraps the model in DistributedDataParallel (gloo).
    # Without it, torchrun on a CPU gives independent one-process runs: not a test of anything.
    env["ACCELERATE_USE_CPU"] = "true"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("RANK", None)
    return env


def command(args: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "storyloop.cli.main", *args]


def launch(args: list[str], nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `storyloop ARGS` as `nproc` processes; fails the test with the output if it fails."""
    done = subprocess.run(command(args, nproc), env=scale_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-6000:]}"
    return done


def launch_and_kill_rank(args: list[str], ready: Callable[[], bool], rank: int = 1, nproc: int = 2,
                         timeout: float = 600) -> subprocess.CompletedProcess:
    """Start `storyloop ARGS` as `nproc` processes; once `ready()` holds, SIGKILL the process of `rank`.

    torchrun then stops the others and exits non-zero, as a GPU box does when one worker dies.
    """
    proc = subprocess.Popen(command(args, nproc), env=scale_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + timeout
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if child.environ().get("RANK") == str(rank):
                        child.kill()
                        killed = True
                except psutil.NoSuchProcess:
                    pass
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
    assert killed, f"the run ended before rank {rank} could be killed\n{err[-4000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
