"""`storyloop`: the console command."""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # import-time notices are noise on a CLI

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from storyloop import __version__
from storyloop.cli import (
    annotate,
    bench,
    data,
    dpo,
    export,
    generate,
    pairs,
    sample,
    study,
    toy,
    vistory,
)
from storyloop.cli.common import (
    BaseModelOpt,
    DataDirOpt,
    DbOpt,
    DpoLoraOpt,
    KOpt,
    Stage1LoraOpt,
    console,
    err_console,
    fail,
    read_password,
    ready_settings,
    settings,
    user_errors,
)
from storyloop.db import migrate as db_migrate
from storyloop.db import session_scope
from storyloop.db import users as db_users
from storyloop.db.audit import cli_actor
from storyloop.db.models import Role, Round
from storyloop.db.rounds import ModelSpec, create_round, get_round, round_overviews

app = typer.Typer(name="storyloop", no_args_is_help=True, add_completion=False,
                  help="Judge generated story frames, and turn the judgments into a better FLUX LoRA.")
users_app = typer.Typer(no_args_is_help=True, help="Manage accounts: annotators, researchers, admins.")
round_app = typer.Typer(no_args_is_help=True, help="Create and inspect rounds of scenarios.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema: upgrade, status.")
app.add_typer(users_app, name="users")
app.add_typer(round_app, name="round")
app.add_typer(db_app, name="db")
app.add_typer(generate.app, name="generate")
app.add_typer(bench.app, name="bench")
app.command("annotate")(annotate.annotate)
app.add_typer(pairs.app, name="pairs")
app.add_typer(dpo.app, name="dpo")
app.add_typer(toy.app, name="toy")
app.add_typer(data.app, name="data")
app.add_typer(study.app, name="study")
app.add_typer(vistory.app, name="vistory")
app.command("export")(export.export)
app.command("sample")(sample.sample)
app.command("story", epilog=sample.STORY_EPILOG)(sample.story)


def _version(value: bool) -> None:
    if value:
        console.print(f"storyloop {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")] = False) -> None:
    pass


@app.command()
def init(data_dir: DataDirOpt = None, db: DbOpt = None,
         admin: Annotated[str, typer.Option(help="Username of the first admin.")] = "admin") -> None:
    """Create the data directory, migrate the database, and create the first admin.

    The admin's password comes from STORYLOOP_ADMIN_PASSWORD or a hidden prompt.
    """
    s = settings(data_dir, db)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    s.store_dir.mkdir(exist_ok=True)
    with user_errors():
        db_migrate.upgrade(s.db_url)
        with session_scope(s.db_url) as session:
            if any(u.role == Role.admin for u in db_users.list_users(session)):
                console.print(f"Database ready at revision {db_migrate.head_revision()}; an admin exists.")
                return
        password = read_password("STORYLOOP_ADMIN_PASSWORD", f"Password for admin {admin!r}")
        with session_scope(s.db_url) as session:
            db_users.add_user(session, admin, password, Role.admin)
    console.print(f"Initialised {s.data_dir} (schema {db_migrate.head_revision()}); admin {admin!r} created.")


# -- db ------------------------------------------------------------------------------------------

@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Apply pending migrations."""
    s = settings(data_dir, db)
    if s.db_url.startswith("sqlite"):
        s.data_dir.mkdir(parents=True, exist_ok=True)
    with user_errors():
        before = db_migrate.current_revision(s.db_url)
        db_migrate.upgrade(s.db_url)
    console.print(f"Schema {before or 'empty'} -> {db_migrate.head_revision()}.")


@db_app.command("status")
def db_status(data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Show the schema revision of the database and of this code."""
    s = settings(data_dir, db)
    with user_errors():
        current = db_migrate.current_revision(s.db_url)
    head = db_migrate.head_revision()
    state = "up to date" if current == head else "behind: run `storyloop db upgrade`"
    console.print(f"database: {current or 'empty'}   code: {head}   ({state})")


@db_app.command("backup")
def db_backup(dest: Annotated[Path, typer.Argument(help="A new folder for the backup.")],
              data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Back up the database (pg_dump, or SQLite's online backup) and the image store into DEST."""
    from storyloop.db.backup import BackupError, backup

    try:
        manifest = backup(settings(data_dir, db), dest)
    except (BackupError, db_migrate.SchemaError) as exc:
        raise fail(str(exc)) from None
    console.print(f"Backed up {sum(manifest['rows'].values())} rows ({manifest['rows']['judgments']} judgments) and "
                  f"{manifest['store_files']} images to {dest}.")


@db_app.command("restore")
def db_restore(src: Annotated[Path, typer.Argument(help="A folder written by `storyloop db backup`.")],
               data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Restore a backup into an empty database and the data directory, then check rows and image hashes."""
    from storyloop.db.backup import BackupError, restore

    try:
        done = restore(settings(data_dir, db), src)
    except (BackupError, db_migrate.SchemaError) as exc:
        raise fail(str(exc)) from None
    console.print(f"Restored {sum(done['rows'].values())} rows ({done['rows']['judgments']} judgments) and "
                  f"{done['images']} images, each checked against its sha256.")


# -- users ---------------------------------------------------------------------------------------

EmailOpt = Annotated[str | None, typer.Option(
    help="The e-mail address single sign-on maps to this account (the identity provider's, any case).")]


@users_app.command("add")
def users_add(username: str,
              role: Annotated[Role, typer.Option(help="annotator, researcher or admin.")] = Role.annotator,
              email: EmailOpt = None,
              data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Add an account. The password comes from STORYLOOP_PASSWORD or a hidden prompt."""
    s = ready_settings(data_dir, db)
    password = read_password("STORYLOOP_PASSWORD", f"Password for {username!r}")
    with user_errors(), session_scope(s.db_url) as session:
        db_users.add_user(session, username, password, role, email=email)
    console.print(f"Added {role.value} {username!r}" + (f" <{email.strip().lower()}>." if email else "."))


@users_app.command("set-email")
def users_set_email(username: str,
                    email: Annotated[str | None, typer.Argument(
                        help="The address single sign-on maps to the account.")] = None,
                    clear: Annotated[bool, typer.Option("--clear", help="Remove the address: password login only.")]
                    = False,
                    data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Set the e-mail address an identity provider's login maps to this account (or --clear it)."""
    if (email is None) == (not clear):
        raise fail("give an e-mail address or --clear (not both)")
    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        user = db_users.set_email(session, username, None if clear else email, actor=cli_actor())
    console.print(f"{username!r} has e-mail address {user.email}." if user.email else
                  f"{username!r} has no e-mail address: password login only.")


@users_app.command("list")
def users_list(data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """List accounts."""
    s = ready_settings(data_dir, db)
    table = Table("username", "role", "active", "created", "e-mail")
    with session_scope(s.db_url) as session:
        for u in db_users.list_users(session):
            table.add_row(u.username, u.role.value, "yes" if u.is_active else "no",
                          f"{u.created_at:%Y-%m-%d %H:%M}", u.email or "")
    console.print(table)


@users_app.command("set-role")
def users_set_role(username: str, role: Role, data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Change an account's role; its logins end, so the next one carries the new rights."""
    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        db_users.set_role(session, username, role, actor=cli_actor())
    console.print(f"{username!r} is now {role.value}.")


@users_app.command("disable")
def users_disable(username: str, data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Disable an account: its logins end, it can no longer log in or submit; its judgments stay."""
    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        db_users.set_active(session, username, False, actor=cli_actor())
    console.print(f"{username!r} disabled.")


@users_app.command("reset-password")
def users_reset_password(username: str, data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Set a new password (from STORYLOOP_PASSWORD or a hidden prompt); every login of the account ends."""
    s = ready_settings(data_dir, db)
    password = read_password("STORYLOOP_PASSWORD", f"New password for {username!r}")
    with user_errors(), session_scope(s.db_url) as session:
        ended = db_users.set_password(session, username, password, actor=cli_actor())
    console.print(f"Password of {username!r} changed; {ended} login session(s) ended.")


@users_app.command("sessions")
def users_sessions(username: str,
                   revoke: Annotated[bool, typer.Option("--revoke", help="End every live login of the account.")]
                   = False,
                   data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """List an account's login sessions (live, expired, ended); --revoke ends the live ones."""
    from storyloop.db.models import utcnow
    from storyloop.queueing import aware

    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        ended = db_users.end_sessions(session, username, actor=cli_actor()) if revoke else 0
        now = utcnow()
        table = Table("started", "last seen", "expires", "state")
        for row in db_users.login_sessions(session, username):
            state = ("ended" if row.revoked_at is not None else
                     "expired" if aware(row.expires_at) <= now else "live")
            table.add_row(f"{row.created_at:%Y-%m-%d %H:%M}", f"{row.last_seen_at:%Y-%m-%d %H:%M}",
                          f"{row.expires_at:%Y-%m-%d %H:%M}", state)
    console.print(table)
    if revoke:
        console.print(f"{ended} live login session(s) of {username!r} ended.")


@users_app.command("enable")
def users_enable(username: str, data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Re-enable a disabled account."""
    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        db_users.set_active(session, username, True, actor=cli_actor())
    console.print(f"{username!r} enabled.")


@app.command("audit")
def audit_log(
    user: Annotated[str | None, typer.Option("--user", help="Only events by or about this account.")] = None,
    since: Annotated[str | None, typer.Option(help="Only events since then: an ISO date or time (2026-12-01, "
                                                   "2026-12-01T08:00) or an age (30m, 12h, 7d).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events, newest first.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event, one a line.")] = False,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """The audit log: logins (and failures, with the client address), role changes, disable/enable, password
    resets, ended sessions, exports, gold changes, round settings, studies created. Append-only."""
    import json

    from storyloop.db.audit import events, parse_since

    s = ready_settings(data_dir, db)
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise fail(str(exc)) from None
    with session_scope(s.db_url) as session:
        rows = events(session, user, start, limit)
        if as_json:
            for e in rows:
                print(json.dumps({"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "target": e.target,
                                  "client": e.client, "details": e.details}, ensure_ascii=False))
            return
        table = Table("when (UTC)", "who", "action", "target", "client", "details")
        for e in rows:
            table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.target or "", e.client or "",
                          json.dumps(e.details, ensure_ascii=False) if e.details else "")
    console.print(table)


# -- rounds --------------------------------------------------------------------------------------

@round_app.command("create")
def round_create(
    name: str,
    scenarios: Annotated[Path | None, typer.Option(
        help="JSONL, one scenario a line: id, story_id, frame_index, prompt, references, candidates.")] = None,
    parent: Annotated[str | None, typer.Option(help="The round this one follows.")] = None,
    base_model: BaseModelOpt = None, stage1_lora: Stage1LoraOpt = None, dpo_lora: DpoLoraOpt = None,
    judgments_per_scenario: KOpt = 3,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Create a round and import its scenarios, all or nothing. Re-running with the same file is a no-op."""
    s = ready_settings(data_dir, db)
    spec = ModelSpec(base_model, stage1_lora, dpo_lora)
    with user_errors(), session_scope(s.db_url) as session:
        summary = create_round(session, s.store_dir, name, scenarios, parent, spec, judgments_per_scenario)
    verb = "Created" if summary.round_created else "Updated"
    if not summary.round_created and not summary.scenarios_added:
        verb = "Unchanged:"
    console.print(f"{verb} round {name!r}: {summary.scenarios_added} scenario(s) added "
                  f"({summary.scenarios_unchanged} already there) from {len(summary.story_ids)} story(ies); "
                  f"{summary.references} reference(s), {summary.candidates} candidate(s), "
                  f"{summary.new_assets} new image(s) in the store.")


@round_app.command("list")
def round_list(data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """List rounds with their size and progress."""
    s = ready_settings(data_dir, db)
    table = Table("round", "parent", "scenarios", "candidates", "judgments", "k", "created")
    with session_scope(s.db_url) as session:
        for o in round_overviews(session):
            r = o.round
            table.add_row(r.name, r.parent.name if r.parent else "-", str(o.scenarios), str(o.candidates),
                          str(o.judgments), str(r.judgments_per_scenario), f"{r.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


def _references_cell(references) -> str:
    """'3' for a flat list; '3: Mia 1, Tom 2' when the references belong to named characters."""
    from storyloop.characters import Slot, grouped, named

    slots = [Slot(r.character, r) for r in references]
    if not named(slots):
        return str(len(slots))
    return f"{len(slots)}: " + ", ".join(f"{c or 'unnamed'} {len(items)}" for c, items in grouped(slots).items())


@round_app.command("show")
def round_show(names: Annotated[list[str], typer.Argument(
                   help="One round, or several to put their benchmark results side by side.")],
               data_dir: DataDirOpt = None, db: DbOpt = None) -> None:
    """Show a round's model spec and scenarios, and its ViStoryBench results (several rounds: side by side)."""
    from storyloop.vistory.results import result_rows

    s = ready_settings(data_dir, db)
    with user_errors(), session_scope(s.db_url) as session:
        for name in names:
            r: Round = get_round(session, name)
            console.print(f"[bold]{r.name}[/]  parent: {r.parent.name if r.parent else '-'}  "
                          f"k = {r.judgments_per_scenario}")
            for label, path, sha in (("base model", r.base_model, None),
                                     ("stage-1 LoRA", r.stage1_lora_path, r.stage1_lora_sha256),
                                     ("DPO LoRA", r.dpo_lora_path, r.dpo_lora_sha256)):
                console.print(f"  {label:13} {path or '-'}" + (f"  sha256 {sha[:16]}…" if sha else ""))
            if r.source:
                console.print("  source        " + ", ".join(f"{k} {v}" for k, v in r.source.items()
                                                             if v is not None))
            table = Table("id", "story", "frame", "refs", "candidates", "prompt")
            for sc in r.scenarios:
                table.add_row(sc.key, sc.story_id, str(sc.frame_index), _references_cell(sc.references),
                              str(len(sc.candidates)), sc.prompt if len(sc.prompt) < 60 else sc.prompt[:57] + "…")
            console.print(table)
        results = result_rows(session, list(dict.fromkeys(names)))
    if results:
        console.print(vistory.results_table(results))


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Demo data directory; wiped and recreated.")] = Path("demo-data"),
    loop: Annotated[bool, typer.Option("--loop", help="Run the whole loop headless and print Table 2.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --loop: end with one JSON object.")] = False,
    port: Annotated[int, typer.Option(help="Annotator port.")] = 8501,
    serve: Annotated[bool, typer.Option(help="Start the annotator when the round is ready.")] = True,
) -> None:
    """The toy world end to end: a judged round in the browser, or (--loop) the whole loop headless."""
    import json

    from storyloop.demo import DemoError, run_demo_loop, setup_demo

    try:
        if loop:
            result = run_demo_loop(data_dir, log=lambda m: err_console.print(m, highlight=False))
            from storyloop.toy.loop import table
            from storyloop.toy.picture import story_sheet

            sheet = story_sheet(result["_scenarios"], result["_images"], result["_scenarios"][0].story_id,
                                data_dir / "held-out-story.png")
            console.print(table(result), highlight=False, soft_wrap=True)  # a log keeps its rows whole
            console.print(f"One held-out story, references then each row's frames: {sheet}")
            public = {k: v for k, v in result.items() if not k.startswith("_")}
            print(json.dumps(public) if as_json else "")
            return
        setup = setup_demo(data_dir)
    except (DemoError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    console.print(f"Demo data in {setup.settings.data_dir.resolve()}: round {setup.round_name!r} with "
                  f"{setup.candidates} candidates from the toy Stage-1 model.")
    for user, password in setup.credentials.items():
        console.print(f"  log in as [bold]{user}[/] / [bold]{password}[/]")
    if serve:
        from storyloop.cli.annotate import annotate

        annotate(port=port, host="127.0.0.1", data_dir=setup.settings.data_dir, db=setup.settings.db_url)


if __name__ == "__main__":
    app()
