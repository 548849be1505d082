"""Run one function over many inputs (books, videos) in worker processes, with one progress bar."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm


def parallel_map(fn: Callable, items: Sequence, workers: int = 1, desc: str = "", unit: str = "it",
                 progress: bool = True) -> list:
    """[fn(x) for x in items], in input order whatever order they finish in (so results are deterministic).

    `fn` must be a module-level function; workers start by forkserver, so they never inherit a loaded model
    or torch's threads. One worker (or one item) runs in this process.
    """
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, leave=False)
    try:
        if workers <= 1 or len(items) <= 1:
            out = []
            for item in items:
                out.append(fn(item))
                bar.update()
            return out
        results: list = [None] * len(items)
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
        return results
    finally:
        bar.close()
