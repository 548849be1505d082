"""Options and error handling shared by every command."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from storyloop.db import SchemaError, require_current_schema
from storyloop.db.judgments import JudgmentError
from storyloop.db.rounds import RoundError
from storyloop.db.users import UserError
from storyloop.settings import DATA_DIR_ENV, DB_URL_ENV, Settings

console = Console()
err_console = Console(stderr=True)

DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", envvar=DATA_DIR_ENV, show_envvar=True,
    help="Data directory (image store, SQLite file, runs). Default: ~/.local/share/storyloop.")]
DbOpt = Annotated[str | None, typer.Option(
    "--db", envvar=DB_URL_ENV, show_envvar=True,
    help="Database URL, e.g. postgresql://user@host/storyloop. Default: SQLite in the data directory.")]

# What generates a round's candidates, and how many judgments it needs: `round create` and `vistory import`.
BaseModelOpt = Annotated[str | None, typer.Option(help="FLUX base: local folder or hub id.")]
Stage1LoraOpt = Annotated[Path | None, typer.Option(help="Stage-1 GSA LoRA file or folder.")]
DpoLoraOpt = Annotated[Path | None, typer.Option(help="DPO refinement LoRA file or folder.")]
KOpt = Annotated[int, typer.Option("-k", "--judgments-per-scenario", min=1, help="Judgments each scenario needs.")]

# Errors a user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (SchemaError, RoundError, UserError, JudgmentError, FileNotFoundError)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a known error into one clear line on stderr and a non-zero exit."""
    try:
        yield
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None


def main_process() -> bool:
    """False on every process but the first of a multi-process run (torchrun and accelerate launch set RANK),
    so that a run's outcome is printed once."""
    return int(os.environ.get("RANK", "0")) == 0


def settings(data_dir: Path | None, db: str | None) -> Settings:
    return Settings.resolve(data_dir, db)


def ready_settings(data_dir: Path | None, db: str | None) -> Settings:
    """Settings for a database that is initialised and at the current schema, or a clean exit."""
    s = settings(data_dir, db)
    with user_errors():
        require_current_schema(s.db_url)
    return s


def parse_overrides(items: list[str] | None) -> dict:
    """`--set KEY=VALUE` options as a dict; values are read as YAML (numbers, booleans, lists)."""
    from storyloop.generation.config import read_yaml

    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--set takes KEY=VALUE, got {item!r}")
        overrides[key.strip()] = read_yaml(value)
    return overrides


def read_password(env_var: str, prompt: str) -> str:
    """From `env_var`, else a hidden prompt with confirmation; never echoed or logged."""
    password = os.environ.get(env_var)
    if password:
        return password
    if not sys.stdin.isatty():
        raise fail(f"no password: set {env_var} or run in a terminal to be prompted")
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
