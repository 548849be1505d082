import json

from typer.testing import CliRunner

from storyloop.cli.main import app
from tests.dpo.helpers import A, C, P, judge, judged_round


def test_pairs_stats_reports_pools_levels_and_the_pair_set_hash(settings, tmp_path, monkeypatch):
    (sid,), (cands,), users = judged_round(settings, tmp_path)
    for u in users.values():
        judge(settings, sid, cands, u, [P, A, C, P], ranks={0: 1, 3: 2})
    monkeypatch.setenv("STORYLOOP_DB_URL", settings.db_url)
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(settings.data_dir))
    out = CliRunner().invoke(app, ["pairs", "stats", "--round", "r1", "--json"])
    assert out.exit_code == 0, out.output
    stats = json.loads(out.output.strip().splitlines()[-1])
    assert stats["possible_pairs"] == {"consistency": 1, "anatomy": 1, "aesthetics": 1}
    assert stats["winners"] == 1 and stats["losers"] == 3 and len(stats["pair_set_sha256"]) == 64
    # An epoch draws as many pairs as there are distinct ones, losers weighted by level: the distinct pairs it
    # drew, per level, never exceed the possible ones and add up to no more than the draws.
    assert stats["epoch_pairs"] == sum(stats["possible_pairs"].values()) == sum(stats["epoch_pairs_per_level"].values())
    distinct = stats["epoch_distinct_pairs_per_level"]
    assert all(0 <= distinct[k] <= min(stats["possible_pairs"][k], stats["epoch_pairs_per_level"][k]) for k in distinct)
    human = CliRunner().invoke(app, ["pairs", "stats", "--round", "r1"])
    assert "aesthetics" in human.output and "distinct in epoch 0" in human.output
    missing = CliRunner().invoke(app, ["pairs", "stats", "--round", "nope"])
    assert missing.exit_code == 1 and "no round named 'nope'" in missing.output
