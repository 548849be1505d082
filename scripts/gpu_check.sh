#!/usr/bin/env bash
# scripts/gpu_check.sh [--cpu-smoke] [--modes full,80gb,24gb] [--only stage1,dpo,generate,gsa,bench-dpo] ...
#
# What only a GPU can measure, with random weights (nothing downloads): Stage-1 and DPO steps and a small
# `generate run` of FLUX.1-dev in bf16 per memory mode, `bench gsa` and `bench dpo`; the last line printed is
# one JSON object. --cpu-smoke runs the same steps on a tiny pipeline on this CPU. docs/gpu-check.md says
# how to build ./wheels (scripts/gpu_wheelhouse.sh) and how to call the GPU machine.
#
# PYTHON picks the interpreter (default python3, the one that holds torch on the GPU machine). When storyloop
# cannot import what the check runs, the wheels in ./wheels whose package is missing (or older) are installed
# with --no-deps into GPU_CHECK_SITE (default /tmp/storyloop-site), put first on PYTHONPATH: the machine's own
# torch stays. When everything imports already (a storyloop venv), nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/storyloop-site}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# Every top-level package the check's commands import (quick to look up; importing them all takes seconds).
PRESENT="import importlib.util, sys
need = 'torch diffusers transformers peft accelerate safetensors tokenizers PIL numpy tqdm yaml typer rich pydantic \
sqlalchemy alembic mako argon2'.split()
missing = [n for n in need if importlib.util.find_spec(n) is None]
sys.exit(f'missing: {\" \".join(missing)}' if missing else 0)"
IMPORTS="import storyloop.cli.main, storyloop.generation.stage1, storyloop.generation.run, storyloop.dpo.trainer, \
storyloop.bench.gpu_check, storyloop.db.judgments"

if ! "$PYTHON" -c "$PRESENT" 2>/dev/null; then
    shopt -s nullglob
    wheels=(wheels/*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
        "$PYTHON" -c "$PRESENT" || true
        echo "error: storyloop cannot import what the check runs and there is no ./wheels: build it with" \
             "scripts/gpu_wheelhouse.sh where the package registry is reachable, and carry it (docs/gpu-check.md)" >&2
        exit 2
    fi
    # The wheels whose distribution is missing here, or installed at an older version than the wheel's.
    mapfile -t pick < <("$PYTHON" - "${wheels[@]}" <<'PY'
import importlib.metadata as md
import re
import sys

def key(version):
    return [int(x) if x.isdigit() else -1 for x in re.split(r"[.+-]", version)]

for path in sys.argv[1:]:
    name, version = path.rsplit("/", 1)[-1].split("-")[:2]
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is None or key(have) < key(version):
        print(path)
        print(f"  {name} {version} (here: {have or 'missing'})", file=sys.stderr)
PY
)
    if [ ${#pick[@]} -gt 0 ]; then
        echo "gpu_check: installing ${#pick[@]} wheel(s) into $SITE" >&2
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            "${pick[@]}"
    fi
    export PYTHONPATH="$SITE:$PYTHONPATH"
    if ! "$PYTHON" -c "$IMPORTS"; then
        echo "error: storyloop still cannot import what the check runs after installing ./wheels (see above):" \
             "add the missing package to scripts/gpu_wheelhouse.sh" >&2
        exit 2
    fi
fi
exec "$PYTHON" -m storyloop.bench.gpu_check "$@"
