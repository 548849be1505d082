"""The tensors a DPO run trains on, encoded once: candidate latents, prompts, reference latents.

Sizes: a scenario's candidates are encoded at their own size (as generated), scaled down keeping
their aspect ratio only when larger than `resolution`^2 pixels, with sides rounded down to the model's
factor; a scenario whose candidates differ in size uses its most common one for all. Its references
are encoded as generation encodes them: each at its aspect ratio's bucket of about the candidates'
area. The pairs of one batch share one noise shape, so they need one candidate size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm.auto import tqdm

from storyloop.db.assets import asset_path
from storyloop.db.models import Scenario
from storyloop.dpo.errors import DPOError
from storyloop.dpo.pools import Pools
from storyloop.generation.encoding_cache import EncodingCache
from storyloop.generation.flux import References, TextEmbeds
from storyloop.generation.gsa import REFERENCE_PROMPT
from storyloop.generation.buckets import downscaled_size, reference_size
from storyloop.generation.models import encode_images, encode_text, latent_grid, size_factor


@dataclass
class ScenarioTensors:
    text: TextEmbeds  # one row: the scenario's prompt
    refs: list[torch.Tensor]  # per reference [L_i, C] clean latents, in slot order
    ref_grids: list[tuple[int, int]]  # per reference its token grid
    grid: tuple[int, int]  # token grid of the scenario's candidates


@dataclass
class PairData:
    latents: dict[int, torch.Tensor]  # candidate id -> [L, C]
    scenarios: dict[int, ScenarioTensors]
    empty: TextEmbeds  # one row: the empty prompt the references are encoded with

    @property
    def grids(self) -> set[tuple[int, int]]:
        """The candidates' token grids over all scenarios."""
        return {sc.grid for sc in self.scenarios.values()}


@dataclass
class PairBatchTensors:
    winners: torch.Tensor  # [B, L, C]
    losers: torch.Tensor  # [B, L, C]
    text: TextEmbeds  # B rows
    refs: References | None  # each pair's references, pair after pair (None when the scenarios have none)
    refs_per_pair: int | tuple[int, ...]  # n for every pair, or one count per pair where they differ
    grid: tuple[int, int]  # token grid of every image in the batch

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def to(self, device, dtype) -> PairBatchTensors:
        def t(x):
            return TextEmbeds(x.prompt_embeds.to(device, dtype), x.pooled.to(device, dtype))

        refs = None if self.refs is None else self.refs.to(device, dtype)
        return PairBatchTensors(self.winners.to(device, dtype), self.losers.to(device, dtype), t(self.text), refs,
                                self.refs_per_pair, self.grid)


def encode_pairs(session: Session, pipe, store_dir: Path, pools: Pools, cache: EncodingCache, resolution: int,
                 max_sequence_length: int, shard: tuple[int, int] | None = None,
                 progress: bool = True) -> PairData | None:
    """Encode every pooled candidate, every scenario prompt and every reference (cache hits are free).

    With `shard = (rank, world)` only every world-th scenario is encoded into the cache and nothing is
    returned: several processes fill the cache side by side, then each reads it whole.

    `resolution`^2 is the largest candidate area trained on (larger candidates are scaled down).
    """
    factor = size_factor(pipe)

    def image(asset, size) -> torch.Tensor:
        path = asset_path(store_dir, asset)
        return cache.get(f"img:{asset.sha256}:{size[0]}x{size[1]}",
                         lambda: {"x": encode_images(pipe, [Image.open(path)], size)[0]})["x"]

    def text(prompt: str) -> TextEmbeds:
        t = cache.get(f"txt:{prompt}", lambda: _text(pipe, prompt, max_sequence_length))
        return TextEmbeds(t["prompt_embeds"][None], t["pooled"][None])

    wanted = set(pools.members.candidate_id.tolist())
    scenario_ids = sorted(set(pools.members.scenario_id.tolist()))
    if shard is not None:
        scenario_ids = scenario_ids[shard[0]::shard[1]]
    scenarios = session.scalars(select(Scenario).where(Scenario.id.in_(scenario_ids)))
    latents, per_scenario = {}, {}
    for sc in tqdm(list(scenarios), desc="encode pairs", unit="scenario", leave=False, disable=not progress):
        pooled = [c for c in sc.candidates if c.id in wanted]
        size = candidate_size([(c.asset.width, c.asset.height) for c in pooled], resolution * resolution, factor)
        for c in pooled:
            latents[c.id] = image(c.asset, size)
        ref_sizes = [reference_size(r.asset.width, r.asset.height, size, factor) for r in sc.references]
        per_scenario[sc.id] = ScenarioTensors(text(sc.prompt), [image(r.asset, s) for r, s in zip(sc.references, ref_sizes)],
                                              [latent_grid(pipe, h, w) for w, h in ref_sizes],
                                              latent_grid(pipe, size[1], size[0]))
    empty = text(REFERENCE_PROMPT)
    return None if shard is not None else PairData(latents, per_scenario, empty)


def candidate_size(sizes: list[tuple[int, int]], max_area: int, factor: int) -> tuple[int, int]:
    """The (width, height) a scenario's candidates are encoded at: their most common size (ties: the
    smallest), scaled down to at most max_area pixels and rounded down to the factor."""
    counts = Counter(sizes)
    common = min(counts, key=lambda s: (-counts[s], s[0] * s[1], s))
    return downscaled_size(*common, max_area, factor)


def _text(pipe, prompt: str, max_len: int) -> dict[str, torch.Tensor]:
    t = encode_text(pipe, [prompt], max_len)
    return {"prompt_embeds": t.prompt_embeds[0], "pooled": t.pooled[0]}


def assemble(data: PairData, pairs: list[tuple[int, int, int]]) -> PairBatchTensors:
    """Tensors for (scenario, winner, loser) pairs; every scenario in a batch needs the same candidate size.
    Reference counts may differ (frames with one, two or three characters): `refs_per_pair` is then one count
    per pair."""
    counts = [len(data.scenarios[s].refs) for s, _, _ in pairs]
    grids = {data.scenarios[s].grid for s, _, _ in pairs}
    if len(grids) != 1:
        raise DPOError(f"pairs in one batch have candidates of different sizes {sorted(grids)}: "
                         "use train_batch_size = 1 for this round")
    n, grid = (counts[0] if len(set(counts)) == 1 else tuple(counts)), grids.pop()
    winners = torch.stack([data.latents[w] for _, w, _ in pairs])
    losers = torch.stack([data.latents[l] for _, _, l in pairs])
    text = TextEmbeds(torch.cat([data.scenarios[s].text.prompt_embeds for s, _, _ in pairs]),
                      torch.cat([data.scenarios[s].text.pooled for s, _, _ in pairs]))
    refs = None
    if any(counts):
        tokens = [t for s, _, _ in pairs for t in data.scenarios[s].refs]
        grids_ = [g for s, _, _ in pairs for g in data.scenarios[s].ref_grids]
        refs = References.of(tokens, data.empty.expand(len(tokens)), grids_)
    return PairBatchTensors(winners, losers, text, refs, n, grid)
