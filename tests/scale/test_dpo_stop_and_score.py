"""`dpo train` under processes, continued (a file of its own, so the test workers share the slow launches):
the held-out score shared between two processes, and a run stopped by SIGTERM."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from storyloop.db import session_scope
from storyloop.db.models import DpoRun, RunStatus
from storyloop.dpo.config import DPOConfig
from storyloop.dpo.trainer import train_dpo
from tests.dpo.helpers import judged_for_models
from tests.scale.helpers import launch, scale_env
from tests.scale.test_multiprocess import DPO, dpo_args, failures, models, sqlite_settings  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def eval_losses(settings) -> list[dict[int, float]]:
    """Per run: {step: eval/loss} of the steps that scored the held-out pairs."""
    with session_scope(settings.db_url) as s:
        return [{m.step: m.values["eval/loss"] for m in r.metrics if "eval/loss" in m.values}
                for r in s.scalars(select(DpoRun).order_by(DpoRun.id))]


HELD_OUT = dict(eval_split=0.3, eval_steps=2)  # one held-out scenario of the three, scored every 2 steps


def test_dpo_held_out_score_is_shared_between_processes_and_equals_one_process(models, tmp_path):
    settings = sqlite_settings(tmp_path)
    judged_for_models(settings, tmp_path, models, scenarios=3, references=2)
    launch(dpo_args(settings, tmp_path / "two", 2, eval_batch_size=1, **HELD_OUT))  # chunks of 1 pair, shared
    train_dpo(DPOConfig(round="r1", output_dir=str(tmp_path / "one"), max_steps=2, train_batch_size=2, **DPO,
                        **HELD_OUT), settings, progress=False)  # chunks of 2 (train_batch_size), one process
    two, one = eval_losses(settings)  # each pair has its own noise: neither the chunks nor the processes count
    assert two.keys() == one.keys() == {2} and one[2] != pytest.approx(math.log(2), abs=1e-3)  # it learned
    # equal up to the adapters' float rounding (1.4e-5 apart here); a chunk missed or counted twice moves it ~1e-2
    assert two[2] == pytest.approx(one[2], abs=1e-4)


def test_dpo_stopped_by_sigterm_is_marked_failed_and_resumes(models, tmp_path):
    """What a scheduler (or torchrun, stopping the rest when one process dies) sends: the run row says failed
    and why, not running forever; --resume continues it."""
    settings = sqlite_settings(tmp_path)
    judged_for_models(settings, tmp_path, models, scenarios=3, references=2)
    out, steps = tmp_path / "stopped", 40
    proc = subprocess.Popen([sys.executable, "-m", "storyloop.cli.main", *dpo_args(settings, out, steps)],
                            env=scale_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, deadline = out / "checkpoints" / "step-2" / "state.pt", time.monotonic() + 300
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-4000:]  # it stopped itself, after the record
    assert "stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    [(status, reason)] = failures(settings)
    assert status == RunStatus.failed and reason.startswith("Terminated: stopped by SIGTERM")
    launch(dpo_args(settings, out, steps) + ["--resume"], nproc=1)
    [(status, reason)] = failures(settings)
    assert status == RunStatus.completed and reason is None
