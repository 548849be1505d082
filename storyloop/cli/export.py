"""`storyloop export`: a round's preference set for use elsewhere (researchers and admins only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from storyloop.cli.pairs import CompleteOnly, MinVotes
from storyloop.cli.common import DataDirOpt, DbOpt, console, fail, read_password, ready_settings, user_errors
from storyloop.db import session_scope


def export(
    round_name: Annotated[str, typer.Option("--round", help="The judged round.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    fmt: Annotated[str, typer.Option("--format", help="parquet, hf (datasets save_to_disk) or jsonl.")] = "parquet",
    anonymize: Annotated[bool, typer.Option("--anonymize", help="Stable pseudonyms instead of names.")] = False,
    user: Annotated[str, typer.Option("--user", envvar="STORYLOOP_USER",
                                      help="Your researcher/admin account (password: STORYLOOP_PASSWORD or prompt).")]
    = "admin",
    min_agreement: Annotated[float, typer.Option(help="Share of annotators that must agree (> 0.5).")] = 0.6,
    min_votes: MinVotes = 2,
    complete_only: CompleteOnly = False,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Export every (winner, loser) pair of a round with Pick-a-Pic columns plus references and annotators."""
    from storyloop.db.users import authenticate
    from storyloop.dpo.export import ExportError, export_round
    from storyloop.dpo.pools import AggregationPolicy

    s = ready_settings(data_dir, db)
    password = read_password("STORYLOOP_PASSWORD", f"Password for {user!r}")
    with user_errors(), session_scope(s.db_url) as session:
        who = authenticate(session, user, password)
        if who is None:
            raise fail("wrong username or password")
        try:
            summary = export_round(session, s, round_name, out, fmt, who, anonymize,
                                   AggregationPolicy(min_agreement, min_votes=min_votes,
                                                     complete_only=complete_only))
        except (ExportError, ValueError) as exc:
            raise fail(str(exc)) from None
    console.print(f"Exported {summary.rows} pair(s) from {summary.scenarios} scenario(s) of {round_name!r} "
                  f"to {summary.path} (pairs sha256 {summary.pair_set_sha256[:12]}…).")
