"""`storyloop data`: build Stage-1 datasets from picture books and videos (the paper's section 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from storyloop.cli.common import console, err_console, fail, parse_overrides

app = typer.Typer(no_args_is_help=True,
                  help="Build Stage-1 training data: picture books and videos into character groups.")


def _epilog(name: str) -> str:
    """--help's list of config keys, from the config dataclass `name` of storyloop.data.config."""
    from storyloop.data import config

    return "Config keys (YAML or --set KEY=VALUE):\n\n" + "\n\n".join(getattr(config, name).describe().splitlines())


@app.command("books", epilog=_epilog("BooksConfig"))
def books_cmd(
    source: Annotated[Path, typer.Argument(metavar="IN", help="Folder of books: PDFs, or one folder of page "
                                                              "images per book.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to write: metadata.jsonl (one group per "
                                                    "book), images/ and report.json.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of config keys.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: KEY=VALUE.")] = None,
    narrative_filter: Annotated[bool | None, typer.Option(
        "--narrative-filter/--no-narrative-filter", show_default=False,
        help="Score pages narrative vs cover/preface/layout and keep those >= narrative_threshold "
             "(default on).")] = None,
    text_removal: Annotated[bool | None, typer.Option(
        "--text-removal/--no-text-removal", show_default=False,
        help="Find text boxes with a detector and inpaint them away (default off: it needs a detector model).")] = None,
    captions: Annotated[Path | None, typer.Option(
        "--captions", metavar="FILE", help="Take captions from FILE (JSON lines of {key, caption}; key = a "
                                          "frame's source such as book.pdf#page=3, or its image's sha256) "
                                          "instead of a model.")] = None,
    no_captions: Annotated[bool, typer.Option("--no-captions",
                                              help="Leave captions empty (no captioning model).")] = False,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes reading and deduplicating "
                                                                         "books in parallel.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace DATASET if it exists (the new one is "
                                                                "written aside, then swapped in).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON line, last.")] = False,
) -> None:
    """Picture books into a Stage-1 dataset: pages, resolution, narrative filter, text removal, dedup,
    min frames per book, captions (the paper's section 3.2 and 3.4). Resumable: finished work is cached."""
    from storyloop.data.books import UNITS, build_books
    from storyloop.data.config import BooksConfig

    overrides = parse_overrides(set_)
    flags = {"narrative_filter": narrative_filter, "text_removal": text_removal, "workers": workers}
    overrides.update({k: v for k, v in flags.items() if v is not None}, **_caption_overrides(captions, no_captions))
    cfg = _config(BooksConfig, config, overrides)

    def run():
        result = build_books(source, out, cfg, overwrite=overwrite, progress=not as_json)
        work = ", ".join(f"{stage} {n}" for stage, n in result.computed.items())
        return result.report, f"(work done now, the rest came from the cache: {work})"

    _run(run, UNITS, out, as_json)


@app.command("video", epilog=_epilog("VideoConfig"))
def video_cmd(
    src: Annotated[Path, typer.Argument(metavar="IN", help="A video file, or a folder of them (searched "
                                                           "recursively; files that do not decode are skipped).")],
    out: Annotated[Path, typer.Option("--out", help="The dataset folder to write (metadata.jsonl, images/, "
                                                    "report.json).")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of config keys.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: KEY=VALUE.")] = None,
    no_detector: Annotated[bool, typer.Option("--no-detector", help="No character detector: each whole frame is "
                                                                    "one crop.")] = False,
    embedder: Annotated[str | None, typer.Option(help="Crop embedder: a DINOv2 folder or hub id, or "
                                                      "color-histogram (no model).")] = None,
    verifier: Annotated[str | None, typer.Option(help="Cluster outlier check: a VLM folder or hub id (Qwen2-VL), "
                                                      "or module:function(crop, reference) -> bool.")] = None,
    captions: Annotated[Path | None, typer.Option("--captions", help="Captions from this file instead of a "
                                                                     "model (JSON lines of {key, caption}).")] = None,
    no_captions: Annotated[bool, typer.Option("--no-captions", help="Leave captions empty.")] = False,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes decoding videos in parallel.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="End with the report as one JSON object on the last "
                                                         "line.")] = False,
) -> None:
    """Videos -> shots -> filtered frames -> character crops -> identity clusters: one Stage-1 group per
    character (the paper's section 3.3). Resumable: finished work is cached by content hash."""
    from storyloop.data.config import VideoConfig
    from storyloop.data.video import UNITS, build_video_dataset

    overrides = parse_overrides(set_)
    for key, value in (("embedder", embedder), ("verifier", verifier), ("workers", workers)):
        if value is not None:
            overrides[key] = value
    if no_detector:
        overrides["detector"] = ""
    overrides.update(_caption_overrides(captions, no_captions))
    cfg = _config(VideoConfig, config, overrides)
    _run(lambda: (build_video_dataset(src, out, cfg, overwrite=overwrite, progress=not as_json), ""),
         UNITS, out, as_json)


def _caption_overrides(captions: Path | None, no_captions: bool) -> dict:
    if captions is not None and no_captions:
        raise fail("--captions and --no-captions exclude each other")
    if no_captions:
        return {"captioner": "", "captions_file": ""}
    return {"captions_file": str(captions)} if captions is not None else {}


def _config(cls, yaml_path: Path | None, overrides: dict):
    try:
        return cls.from_sources(yaml_path, **overrides)
    except (ValueError, OSError) as exc:  # a bad key or value, or an unreadable --config
        raise fail(str(exc)) from None


MAX_SKIPS_SHOWN = 20


def _run(build, units: dict[str, str], out: Path, as_json: bool) -> None:
    """Run a pipeline; print its funnel, the inputs it skipped and where the dataset went; with --json the
    report (and `out`) as the last line. A mistake the user can fix is one line and exit 1."""
    from storyloop.data.books import BooksError
    from storyloop.data.dataset import DatasetExists, NoGroups
    from storyloop.data.models import DataModelError

    try:
        report, note = build()
    except NoGroups as exc:
        _show(exc.report, units)
        if as_json:
            print(json.dumps({"out": None, **exc.report.to_dict()}))
        raise fail(str(exc)) from None
    except (BooksError, DataModelError, DatasetExists, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    _show(report, units)
    images = report.counts.get("images", report.counts.get("min_frames"))  # video counts images; books, pages
    console.print(f"{report.counts['groups']} group(s), {images} image(s) written to {out} {note}".rstrip(),
                  highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps({"out": str(out), **report.to_dict()}))


def _show(report, units: dict[str, str]) -> None:
    console.print(report.table(units))
    for s in report.skipped[:MAX_SKIPS_SHOWN]:
        err_console.print(f"skipped {s.file}: {s.reason}", highlight=False, soft_wrap=True)
    if len(report.skipped) > MAX_SKIPS_SHOWN:
        err_console.print(f"... and {len(report.skipped) - MAX_SKIPS_SHOWN} more: see report.json", highlight=False)
