"""`storyloop data`: build Stage-1 datasets from picture books and videos (the paper's section 3)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True,
                  help="Build Stage-1 training data: picture books and videos into character groups.")
