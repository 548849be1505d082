"""`storyloop pairs`: preference pools and pairs from a round's judgments."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from storyloop.cli.common import DataDirOpt, DbOpt, console, fail, ready_settings, user_errors
from storyloop.db import session_scope

app = typer.Typer(no_args_is_help=True, help="Winner x loser preference pairs from a round's judgments.")

MinAgreement = Annotated[float, typer.Option(help="Share of annotators that must agree on a label (> 0.5).")]
MinVotes = Annotated[int, typer.Option(min=1, help="Non-skipped judgments a scenario needs to count (1 trusts a "
                                                   "single annotator).")]
CompleteOnly = Annotated[bool, typer.Option("--complete-only", help="Only scenarios with the round's k "
                                                                    "non-skipped judgments.")]


@app.command("stats")
def stats(
    round_name: Annotated[str, typer.Option("--round", help="The judged round.")],
    min_agreement: MinAgreement = 0.6,
    min_votes: MinVotes = 2,
    complete_only: CompleteOnly = False,
    include_gold: Annotated[bool, typer.Option(help="Also pool the gold scenarios.")] = False,
    include_disabled: Annotated[bool, typer.Option(help="Also count disabled annotators' judgments.")] = False,
    seed: Annotated[int, typer.Option(help="Sampler seed for the example epoch.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    data_dir: DataDirOpt = None, db: DbOpt = None,
) -> None:
    """Pools per scenario, possible pairs per loser level, and one sampled epoch."""
    from storyloop.dpo.pools import AggregationPolicy, round_pools
    from storyloop.dpo.sampler import PairSampler

    s = ready_settings(data_dir, db)
    try:
        policy = AggregationPolicy(min_agreement, min_votes=min_votes, complete_only=complete_only,
                                   include_gold=include_gold, include_disabled=include_disabled)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with user_errors(), session_scope(s.db_url) as session:
        pools = round_pools(session, round_name, policy)
    sampler = PairSampler(pools, seed=seed)
    epoch = sampler.epoch(0)
    result = {
        "round": round_name, "min_agreement": min_agreement, "min_votes": min_votes, "judgments": pools.judgments,
        "scenarios_judged": pools.scenarios_judged, "scenarios_with_pairs": int(pools.members.scenario_id.nunique()),
        "scenarios_without_pairs": pools.scenarios_without_pairs, "winners": int(pools.winners.shape[0]),
        "losers": int(pools.losers.shape[0]), "possible_pairs": pools.pair_counts(),
        "epoch_pairs": len(epoch), "epoch_pairs_per_level": epoch.level_counts(),
        "epoch_distinct_pairs_per_level": _distinct_per_level(epoch),
        "pair_set_sha256": sampler.fingerprint()}
    if as_json:
        print(json.dumps(result))
        return
    console.print(f"[bold]{round_name}[/]: {result['judgments']} judgment(s) over {result['scenarios_judged']} "
                  f"scenario(s); {result['scenarios_with_pairs']} give pairs (agreement >= {min_agreement}).")
    for reason, count in result["scenarios_without_pairs"].items():
        if count:
            console.print(f"  no pairs: {reason}: {count}")
    table = Table("loser level", "losers", "distinct pairs", "epoch 0 draws", "distinct in epoch 0",
                  caption=f"An epoch draws {result['epoch_pairs']} pairs, as many as there are distinct ones, "
                          "with losers weighted by level (hard negatives more often), so a level's draws differ "
                          "from its distinct pairs and some pairs repeat.", caption_justify="left")
    for code, (level, possible) in enumerate(result["possible_pairs"].items()):
        table.add_row(level, str(int((pools.losers.level == code).sum())), str(possible),
                      str(result["epoch_pairs_per_level"][level]),
                      str(result["epoch_distinct_pairs_per_level"][level]))
    console.print(table)
    console.print(f"winners: {result['winners']}   pair set sha256: {result['pair_set_sha256'][:16]}…")


def _distinct_per_level(epoch) -> dict[str, int]:
    """Distinct (winner, loser) pairs an epoch drew, per loser level."""
    from storyloop.dpo.pools import LEVELS

    drawn = set(zip(epoch.loser_level.tolist(), epoch.winner_id.tolist(), epoch.loser_id.tolist()))
    return {name: sum(1 for level, _, _ in drawn if level == code) for code, name in enumerate(LEVELS)}
