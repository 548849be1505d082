"""The annotator benchmark's parts run and check themselves (figures are printed, never asserted)."""

import pytest

from storyloop.bench.annotator import judgments_per_second, page_build_ms


def test_concurrent_writers_lose_and_double_nothing(db_url, tmp_path):
    result = judgments_per_second(db_url, tmp_path / "data", writers=4, per_writer=12)
    assert result["errors"] == []
    assert (result["judgments"], result["lost"], result["duplicates"]) == (48, 0, 0)
    assert result["double_clicks_absorbed"] == 4 * 2  # every 10th submit sent twice: i = 0 and 10


def test_page_build_renders_the_full_judging_page(tmp_path, monkeypatch):
    monkeypatch.setattr("storyloop.bench.annotator.PAGE_PX", 64)  # same page, small images: a quick check
    # The bench must ignore the user's own database settings (and the app's are restored afterwards).
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(tmp_path / "not-this"))
    monkeypatch.setenv("STORYLOOP_DB_URL", "postgresql://nobody@127.0.0.1:1/not-this")
    result = page_build_ms(tmp_path, runs=3)
    assert result["page_runs"] == 3 and result["page_ms_p50"] > 0 and result["page_ms_cold"] > 0
    assert result["mark_ms_p50"] > 0  # the marks were stored on the lease, or the bench would have raised


@pytest.mark.slow  # a server in a subprocess, as the browser tests
def test_login_flood_refuses_every_wrong_login_and_times_the_page_meanwhile(db_url, tmp_path):
    """A tiny flood (two bursts of 6 wrong logins, small page) through the server's real login path."""
    from storyloop.bench.login_flood import login_flood

    result = login_flood(db_url, tmp_path, logins=6, min_samples=2, max_bursts=3, quiet_runs=3, candidates=2, px=32,
                         log=lambda _: None)
    assert result["bursts"] >= 2 and sum(result["outcomes"].values()) == 6 * result["bursts"]
    assert set(result["outcomes"]) <= {"refused", "throttled"}, result["outcomes"]  # nobody let in, all answered
    assert result["page_runs"] >= 1 and result["page_ms_p95"] >= result["page_ms_p50"] > 0
    assert result["peak_mb"] >= result["base_peak_mb"] > 0 and len(result["peak_mb_by_burst"]) == result["bursts"]
