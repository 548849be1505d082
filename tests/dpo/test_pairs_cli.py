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
    human = CliRunner().invoke(app, ["pairs", "stats", "--round", "r1"])
    assert "aesthetics" in human.output
    missing = CliRunner().invoke(app, ["pairs", "stats", "--round", "nope"])
    assert missing.exit_code == 1 and "no round named 'nope'" in missing.output
