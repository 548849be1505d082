"""`scripts/gpu_check.sh --cpu-smoke`: the GPU check's every step on the tiny pipeline on this CPU, through the
script a GPU machine runs, ending with the one JSON object a GPU run prints (GPU-only figures null)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storyloop.generation.memory import MODES, USES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REQUIRED = ("stage1_step_s", "dpo_step_s", "generate_s_per_image", "gsa_cached_over_plain", "peak_gb", "mfu")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("gpu-smoke")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHON"] = sys.executable
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu-smoke", "--workdir", str(work),
                           "--json-out", str(work / "partial.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return done, work


def test_the_smoke_ends_with_one_json_object_holding_every_figure(smoke):
    done, _ = smoke
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-6000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(key in result for key in REQUIRED) and result["errors"] == {} and result["skipped"] == {}
    modes = set(MODES)
    for key in ("stage1_step_s", "dpo_step_s", "generate_s_per_image"):
        assert set(result[key]) == modes and all(v > 0 for v in result[key].values()), (key, result[key])
    assert result["gsa_cached_over_plain"]["0"] > 0 and result["bench_dpo"]["ours_s"] > 0
    for key in ("peak_gb", "mfu", "estimated_gb", "model_tflops"):
        assert set(result[key]) == modes and all(set(per) == set(USES) for per in result[key].values())
    # A CPU has no GPU figures: null, and the JSON says why rather than inventing one.
    assert all(v is None for per in result["peak_gb"].values() for v in per.values())
    assert all(v is None for per in result["mfu"].values() for v in per.values())
    assert result["not_measured"]["peak_gb"] == result["not_measured"]["mfu"] == "not measured on a GPU"
    assert all(v > 0 for per in result["model_tflops"].values() for v in per.values())
    assert all(v > 0 for per in result["estimated_gb"].values() for v in per.values())


def test_the_partial_json_file_is_the_final_result_and_every_command_is_logged(smoke):
    done, work = smoke
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads((work / "partial.json").read_text()) == result
    log = (Path(result["run_dir"]) / "gpu_check.log").read_text()
    for command in ("generate train-stage1", "dpo train", "generate run", "bench gsa", "bench dpo", "round create"):
        assert f"$ storyloop {command}" in log
    assert "--set memory=24gb" in log and "--memory 24gb" in log
