"""Subcommands whose work lands with later issues: real `--help`, and an honest refusal to run."""

from __future__ import annotations

import typer

from storyloop.cli.common import fail

PENDING = {
    # name: (one-line help, what it will do, issue)
}


def _placeholder(name: str, summary: str, what: str, issue: int) -> typer.Typer:
    sub = typer.Typer(help=f"{summary}\n\nNot available yet: {what} lands with issue #{issue}.")

    @sub.callback(invoke_without_command=True, context_settings={"ignore_unknown_options": True,
                                                                  "allow_extra_args": True})
    def _refuse() -> None:
        raise fail(f"`storyloop {name}` is not available yet: {what} lands with issue #{issue}.", code=2)

    return sub


def register(app: typer.Typer) -> None:
    for name, (summary, what, issue) in PENDING.items():
        app.add_typer(_placeholder(name, summary, what, issue), name=name)
