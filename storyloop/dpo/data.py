"""The tensors a DPO run trains on, encoded once: candidate latents, prompts, reference latents."""

from __future__ import annotations

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
from storyloop.generation.models import encode_images, encode_text, latent_grid


@dataclass
class ScenarioTensors:
    text: TextEmbeds  # one row: the scenario's prompt
    refs: torch.Tensor  # [N, L, C] clean reference latents, in slot order


@dataclass
class PairData:
    latents: dict[int, torch.Tensor]  # candidate id -> [L, C]
    scenarios: dict[int, ScenarioTensors]
    empty: TextEmbeds  # one row: the empty prompt the references are encoded with
    grid: tuple[int, int]


@dataclass
class PairBatchTensors:
    winners: torch.Tensor  # [B, L, C]
    losers: torch.Tensor  # [B, L, C]
    text: TextEmbeds  # B rows
    refs: References | None  # B groups of n references (None when the scenarios have none)
    refs_per_pair: int
    grid: tuple[int, int]  # token grid of every image in the batch

    def to(self, device, dtype) -> PairBatchTensors:
        def t(x):
            return TextEmbeds(x.prompt_embeds.to(device, dtype), x.pooled.to(device, dtype))

        refs = None if self.refs is None else References(self.refs.tokens.to(device, dtype), t(self.refs.text),
                                                         self.refs.grid)
        return PairBatchTensors(self.winners.to(device, dtype), self.losers.to(device, dtype), t(self.text), refs,
                                self.refs_per_pair, self.grid)


def encode_pairs(session: Session, pipe, store_dir: Path, pools: Pools, cache: EncodingCache, resolution: int,
                 max_sequence_length: int, shard: tuple[int, int] | None = None,
                 progress: bool = True) -> PairData | None:
    """Encode every pooled candidate, every scenario prompt and every reference (cache hits are free).

    With `shard = (rank, world)` only every world-th scenario is encoded into the cache and nothing is
    returned: several processes fill the cache side by side, then each reads it whole.
    """
    size = (resolution, resolution)
    grid = latent_grid(pipe, *size)

    def image(asset) -> torch.Tensor:
        path = asset_path(store_dir, asset)
        return cache.get(f"img:{asset.sha256}",
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
        for c in sc.candidates:
            if c.id in wanted:
                latents[c.id] = image(c.asset)
        refs = [image(r.asset) for r in sc.references]
        per_scenario[sc.id] = ScenarioTensors(
            text(sc.prompt), torch.stack(refs) if refs else torch.zeros(0, grid[0] * grid[1], 0))
    empty = text(REFERENCE_PROMPT)
    return None if shard is not None else PairData(latents, per_scenario, empty, grid)


def _text(pipe, prompt: str, max_len: int) -> dict[str, torch.Tensor]:
    t = encode_text(pipe, [prompt], max_len)
    return {"prompt_embeds": t.prompt_embeds[0], "pooled": t.pooled[0]}


def assemble(data: PairData, pairs: list[tuple[int, int, int]]) -> PairBatchTensors:
    """Tensors for (scenario, winner, loser) pairs; every scenario in a batch needs the same reference count."""
    counts = {data.scenarios[s].refs.shape[0] for s, _, _ in pairs}
    if len(counts) != 1:
        raise DPOError(f"pairs in one batch have different reference counts {sorted(counts)}: "
                         "use train_batch_size = 1 for this round")
    n = counts.pop()
    winners = torch.stack([data.latents[w] for _, w, _ in pairs])
    losers = torch.stack([data.latents[l] for _, _, l in pairs])
    text = TextEmbeds(torch.cat([data.scenarios[s].text.prompt_embeds for s, _, _ in pairs]),
                      torch.cat([data.scenarios[s].text.pooled for s, _, _ in pairs]))
    refs = None
    if n:
        tokens = torch.cat([data.scenarios[s].refs for s, _, _ in pairs])
        refs = References(tokens, data.empty.expand(tokens.shape[0]), data.grid)
    return PairBatchTensors(winners, losers, text, refs, n, data.grid)
