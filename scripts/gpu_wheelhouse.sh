#!/usr/bin/env bash
# scripts/gpu_wheelhouse.sh: download into ./wheels the wheels scripts/gpu_check.sh installs on the GPU machine.
#
# The GPU machine (DESIGN.md, "The GPU machine") has Python 3.12 with torch, transformers, accelerate, peft,
# safetensors, typer, rich, pyyaml, pandas and pyarrow, but no diffusers, SQLAlchemy, alembic, pydantic or argon2,
# and no network. These are the distributions storyloop imports on the check's paths that it lacks, found by
# running `scripts/gpu_check.sh --cpu-smoke` with every distribution the machine's image does not list hidden
# (docs/gpu-check.md), plus three it has that storyloop needs newer than an image may hold (typing-extensions
# for pydantic, peft, typer): gpu_check.sh installs a wheel only where its package is missing or older.
# bitsandbytes (NF4) is left out: at 41 MiB it does not fit the 64 MiB the device tool carries; the check's
# 24gb mode then uses torchao's fp8.
#
# Versions are those of the Python environment that runs this (PYTHON, default .venv/bin/python, else python3):
# the check runs what the tests here ran. Run it where the package registry is reachable; `wheels/` is ignored
# by git and travels with the device tool's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEST=${WHEELS_DIR:-wheels}
PY_VERSION=${WHEEL_PYTHON_VERSION:-3.12}

PACKAGES=(
    diffusers torchao
    sqlalchemy alembic mako
    pydantic pydantic-core annotated-types typing-inspection typing-extensions
    argon2-cffi argon2-cffi-bindings cffi
    peft typer
)

mapfile -t pins < <("$PYTHON" - "${PACKAGES[@]}" <<'PY'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        sys.exit(f"error: {name} is not installed in {sys.executable}: install storyloop's dev environment first")
PY
)
tmp="$DEST.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$tmp" "${pins[@]}"
rm -rf "$DEST"
mv "$tmp" "$DEST"
ls -1 "$DEST"
echo "$(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST (for Python $PY_VERSION)"
