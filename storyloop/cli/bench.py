"""`storyloop bench`: benchmarks that print figures; the last line of --json is one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from storyloop.cli.common import console, err_console, fail

app = typer.Typer(no_args_is_help=True, help="Benchmarks: gsa, annotator, dpo, pairs, memory, data.")


@app.command("gsa")
def gsa(
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON object on the last line.")] = False,
    config: Annotated[str, typer.Option(help="mid (CPU-sized) or flux1-dev (the real FLUX.1 config).")] = "mid",
    steps: Annotated[int, typer.Option(min=2, help="Denoising steps timed per variant.")] = 10,
    max_refs: Annotated[int, typer.Option(min=0, help="Measure N = 0..max-refs references (targets at N = 3).")] = 6,
    device: Annotated[str | None, typer.Option(help="cpu or cuda; default: cuda when available.")] = None,
) -> None:
    """Seconds per denoising step: plain FLUX vs GSA uncached vs GSA with cached reference K/V."""
    from storyloop.bench.gsa import CONFIGS, run_gsa_bench

    if config not in CONFIGS:
        raise fail(f"--config must be one of {', '.join(CONFIGS)}")
    result = run_gsa_bench(config, max_refs, steps, device, log=lambda m: err_console.print(m, highlight=False))
    if as_json:
        print(json.dumps(result))
    else:
        console.print_json(json.dumps(result))


@app.command("annotator")
def annotator(
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON object on the last line.")] = False,
    pg_url: Annotated[str | None, typer.Option("--pg-url", envvar="STORYLOOP_TEST_PG_URL", show_envvar=True,
                                               help="PostgreSQL server to measure on (a throwaway database "
                                                    "is created and dropped).")] = None,
    writers: Annotated[int, typer.Option(min=1, help="Concurrent writer processes.")] = 20,
    per_writer: Annotated[int, typer.Option(min=1, help="Judgments each writer submits.")] = 100,
    page_runs: Annotated[int, typer.Option(min=5, help="Timed runs of the judging page.")] = 50,
    flood_logins: Annotated[int, typer.Option(min=1, help="Wrong logins sent at once in each burst of the "
                                                          "login flood.")] = 50,
) -> None:
    """Judging-page build time (8 candidates of 1024²), judgments/s with 20 writers on SQLite and PostgreSQL,
    and the page and the server's memory during bursts of 50 wrong logins."""
    from storyloop.bench.annotator import run_annotator_bench

    result = run_annotator_bench(pg_url, writers, per_writer, page_runs, flood_logins,
                                 log=lambda m: err_console.print(m, highlight=False))
    if not as_json:
        rates = ", ".join(f"{k} {v:.0f}/s" if v is not None else f"{k} -" for k, v in result["judgments_per_s"].items())
        flood = result["login_flood"]
        err_console.print(f"page p50 {result['page_ms_p50']:.1f} ms, p95 {result['page_ms_p95']:.1f} ms "
                          f"(cold {result['page_ms_cold']:.0f} ms); a mark p50 {result['mark_ms_p50']:.1f} ms, "
                          f"p95 {result['mark_ms_p95']:.1f} ms; judgments {rates}; "
                          f"lost {result['lost']}, duplicates {result['duplicates']}; during the login flood: "
                          f"page p95 {flood['page_ms_p95']:.0f} ms (quiet {flood['quiet_page_ms_p95']:.0f} ms), "
                          f"server peak {flood['peak_mb'] or 0:.0f} MB (before {flood['base_peak_mb'] or 0:.0f} MB)")
    print(json.dumps(result))


@app.command("pairs")
def pairs(
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON object on the last line.")] = False,
    judgments: Annotated[int, typer.Option(min=3, help="Synthetic judgments (3 annotators per scenario).")] = 1_000_000,
) -> None:
    """Aggregate 10^6 synthetic judgments into pools and sample one epoch of pairs (target <= 2 s)."""
    from storyloop.bench.pairs import run_pairs_bench

    result = run_pairs_bench(judgments)
    if not as_json:
        err_console.print(f"{result['judgments']} judgments -> {result['pairs']} pairs in {result['seconds']:.2f} s "
                          f"(aggregate {result['aggregate_s']:.2f} s, epoch {result['epoch_s']:.2f} s)")
    print(json.dumps(result))


@app.command("dpo")
def dpo(
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON object on the last line.")] = False,
    config: Annotated[str, typer.Option(help="mid (CPU-sized) or flux1-dev.")] = "mid",
    refs: Annotated[int, typer.Option(min=1, help="References per pair.")] = 2,
    steps: Annotated[int, typer.Option(min=1, help="Timed optimizer steps per variant.")] = 5,
    device: Annotated[str | None, typer.Option(help="cpu or cuda; default: cuda when available.")] = None,
    resolution: Annotated[int | None, typer.Option(
        min=16, help="Square image side in pixels (16 per token); default: the config's grid "
                     "(flux1-dev: 1024).")] = None,
) -> None:
    """One DPO optimizer step: ours (one cached reference pass) vs naive (four full forwards)."""
    from storyloop.bench.dpo import PIXELS_PER_TOKEN, run_dpo_bench
    from storyloop.bench.gsa import CONFIGS

    if config not in CONFIGS:
        raise fail(f"--config must be one of {', '.join(CONFIGS)}")
    if resolution is not None and resolution % PIXELS_PER_TOKEN:
        raise fail(f"--resolution must be a multiple of {PIXELS_PER_TOKEN} (one token per 16 x 16 pixels)")
    result = run_dpo_bench(config, refs, steps, device, resolution=resolution)
    if not as_json:
        err_console.print(f"ours {result['ours_s'] * 1e3:.0f} ms/step ({result['ours_peak_mb']:.0f} MB), naive "
                          f"{result['naive_s'] * 1e3:.0f} ms/step ({result['naive_peak_mb']:.0f} MB); "
                          f"step-0 loss {result['loss_step0']:.7f} (log 2 = {result['log2']:.7f})")
    print(json.dumps(result))


@app.command("memory")
def memory(
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON object on the last line.")] = False,
    config: Annotated[str, typer.Option(help="flux1-dev (FLUX.1-dev with T5-XXL, CLIP-L, VAE) or a CPU-sized "
                                             "transformer (mid, tiny; no encoders counted).")] = "flux1-dev",
    mode: Annotated[str, typer.Option(help="Memory mode: full, 80gb or 24gb.")] = "24gb",
    resolution: Annotated[int, typer.Option(min=16, help="Training image side (Stage-1 and DPO).")] = 512,
    refs: Annotated[int, typer.Option(min=0, help="References per target.")] = 2,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank (Stage-1 and DPO).")] = 16,
    batch_size: Annotated[int, typer.Option(min=1, help="Training micro-batch (targets or pairs).")] = 1,
    generate_resolution: Annotated[int, typer.Option(min=16, help="Generated image side.")] = 1024,
    generate_batch_size: Annotated[int, typer.Option(min=1, help="Candidates denoised together.")] = 4,
    quantization: Annotated[str, typer.Option(help="Base storage: auto (the mode's), none, nf4, int8, fp8.")] = "auto",
    measured: Annotated[Path | None, typer.Option(help="A GPU check's JSON with measured peaks "
                                                       '({"peak_gb": {MODE: {"stage1": GB, ...}}}).')] = None,
) -> None:
    """Estimated peak GPU memory (GB) of Stage-1, DPO and generation in a memory mode, and whether it fits."""
    from storyloop.bench.memory import lines, run_memory_bench
    from storyloop.generation.errors import ModelError

    try:
        result = run_memory_bench(config, mode, resolution, refs, rank, batch_size, generate_resolution,
                                  generate_batch_size, quantization, measured)
    except ModelError as exc:
        raise fail(str(exc)) from None
    if not as_json:
        for line in lines(result):
            err_console.print(line, highlight=False, soft_wrap=True)
    print(json.dumps(result))


@app.command("data")
def data(
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON object on the last line.")] = False,
    books: Annotated[int, typer.Option(min=1, help="Synthetic PDF books.")] = 8,
    pages: Annotated[int, typer.Option(min=2, help="A5 pages per book at 150 dpi.")] = 12,
    videos: Annotated[int, typer.Option(min=1, help="Synthetic 720p clips.")] = 2,
    seconds: Annotated[int, typer.Option(min=3, help="Length of each clip (a cut every 3 s).")] = 30,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes, as data books/video --workers.")] = 2,
) -> None:
    """Throughput of data books and data video's cheap stages (no models), cold and from the cache."""
    from storyloop.bench.data import run_data_bench

    result = run_data_bench(books, pages, videos, seconds, workers, log=lambda m: err_console.print(m, highlight=False))
    if as_json:
        print(json.dumps(result))
    else:
        console.print_json(json.dumps(result))
