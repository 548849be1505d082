"""`vistory results`: the evaluator's summary.json stored with a round, read strictly, shown on the paper's scale."""

import json
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storyloop.db import session_scope
from storyloop.db.models import BenchmarkResult
from storyloop.db.rounds import RoundError, create_round
from storyloop.vistory.importing import ImportOptions, import_dataset
from storyloop.vistory.results import (PAPER_COLUMNS, SummaryFormatError, paper_scale, read_summary, result_rows,
                                       store_results)
from tests.conftest import make_image
from tests.vistory.helpers import LEADERBOARD, PAPER_TABLE_1, build_dataset, summary_json, write_summary


def figures_of(method):
    return read_summary_figures(summary_json(figures=LEADERBOARD[method]))


def read_summary_figures(data):
    with tempfile.TemporaryDirectory() as d:
        return read_summary(write_summary(Path(d) / "summary.json", data)).figures


@pytest.mark.parametrize("method", sorted(PAPER_TABLE_1))
def test_paper_scale_gives_table_1_from_the_leaderboards_rows(method):
    """The published leaderboard's rows, read as the evaluator writes them, give the paper's Table 1 to its
    printed precision: CSD, CIDS × 100, OCCM as it is, alignment = mean(scene, camera, action) / 4 × 100.
    (Within half a unit of the last digit: StoryAdapter's alignment is 67.6499, printed 67.7.)"""
    paper = paper_scale(figures_of(method))
    for column, printed in zip(PAPER_COLUMNS[:6], PAPER_TABLE_1[method]):
        assert abs(paper[column] - printed) <= 0.05 + 1e-3, column


def test_read_summary_maps_every_known_figure():
    f = read_summary_figures(summary_json(figures=LEADERBOARD["UNO"]))
    assert f == {"cids_self": 0.6090050000000001, "cids_cross": 0.457425, "copy_paste": 0.125,
                 "occm": 89.49043000000003, "single_character_action": 2.0, "csd_self": 0.6016575917468682,
                 "csd_cross": 0.39098353966909466, "aesthetics": 5.2315, "prompt_scene": 3.5099151276328384,
                 "prompt_action": 2.7927331146544594, "prompt_camera": 3.2466627281653593,
                 "inception_score": 12.4, "inception_score_std": 0.8}
    partial = summary_json()
    partial["metrics"] = {"csd": partial["metrics"]["csd"]}  # only `--metrics csd` was run
    p = paper_scale(read_summary_figures(partial))
    assert p["CSD cross"] == pytest.approx(39.098353966909466) and p["CIDS cross"] is None and p["alignment"] is None


@pytest.mark.parametrize("change, field", [
    (lambda d: d["metrics"].update(fid={"metrics": {"fid": 3.0}}), "metrics.fid"),
    (lambda d: d["metrics"]["csd"].pop("metrics"), "metrics.csd.metrics"),
    (lambda d: d["metrics"]["cids"]["metrics"].update(occm="high"), "metrics.cids.metrics.occm"),
    (lambda d: d["metrics"]["aesthetic"]["metrics"].update(aesthetic_score=True),
     "metrics.aesthetic.metrics.aesthetic_score"),
    (lambda d: d["run"].pop("language"), "run.language"),
    (lambda d: d["run"].update(language="fr"), "run.language"),
    (lambda d: d.pop("run"), "run"),
    (lambda d: d.update(metrics=[]), "metrics"),
    (lambda d: d.update(metrics={}), "metrics"),
])
def test_unknown_formats_are_refused_naming_the_file_and_field(tmp_path, change, field):
    data = summary_json()
    change(data)
    path = write_summary(tmp_path / "summary.json", data)
    with pytest.raises(SummaryFormatError) as err:
        read_summary(path)
    assert str(err.value).startswith(f"{path}: field {field!r}:")


def test_unreadable_summaries_are_refused(tmp_path):
    with pytest.raises(SummaryFormatError, match=r"summary.json: not valid JSON \(Expecting value at line 1 column 1"):
        read_summary(write_summary(tmp_path / "summary.json", "not json"))
    with pytest.raises(SummaryFormatError, match=r"field '\(top level\)': expected a JSON object, got list"):
        read_summary(write_summary(tmp_path / "summary.json", "[1, 2]"))
    with pytest.raises(SummaryFormatError, match="no such file"):
        read_summary(tmp_path / "missing.json")


@pytest.fixture
def vistory_round(settings, tmp_path):
    with session_scope(settings.db_url) as s:
        import_dataset(s, settings.store_dir, build_dataset(tmp_path / "data"), "vb", ImportOptions(split="lite"))
    return "vb"


def stored(url):
    with session_scope(url) as s:
        return [(r.method, r.mode, r.language, r.split, r.evaluated_at, r.figures["cids_cross"])
                for r in s.scalars(select(BenchmarkResult).order_by(BenchmarkResult.id))]


def test_store_is_idempotent_and_another_summary_for_the_same_run_needs_replace(settings, vistory_round, tmp_path):
    path = write_summary(tmp_path / "a" / "summary.json", summary_json())
    with session_scope(settings.db_url) as s:
        assert store_results(s, vistory_round, path).state == "stored"
    with session_scope(settings.db_url) as s:
        assert store_results(s, vistory_round, path).state == "unchanged"
    assert stored(settings.db_url) == [("storyloop", "base", "en", "lite", "20260102_120000", 0.457425)]
    other = write_summary(tmp_path / "b" / "summary.json", summary_json(figures=LEADERBOARD["StoryGen"]))
    with pytest.raises(RoundError, match=r"already has another summary for storyloop/base/en at 20260102_120000: "
                                         r"pass --replace"), session_scope(settings.db_url) as s:
        store_results(s, vistory_round, other)
    assert stored(settings.db_url)[0][-1] == 0.457425
    with session_scope(settings.db_url) as s:
        assert store_results(s, vistory_round, other, replace=True).state == "replaced"
    later = write_summary(tmp_path / "c" / "summary.json", summary_json(timestamp="20260103_090000"))
    with session_scope(settings.db_url) as s:
        store_results(s, vistory_round, later, split="full")
    assert stored(settings.db_url) == [("storyloop", "base", "en", "lite", "20260102_120000", 0.37076624999999996),
                                       ("storyloop", "base", "en", "full", "20260103_090000", 0.457425)]
    with session_scope(settings.db_url) as s:
        assert [r.evaluated_at for r in result_rows(s, ["vb"])] == ["20260102_120000", "20260103_090000"]


def test_a_summary_that_is_not_this_rounds_is_refused_and_nothing_stored(settings, vistory_round, tmp_path):
    ch = write_summary(tmp_path / "ch" / "summary.json", summary_json(language="ch"))
    with pytest.raises(RoundError, match="run.language is 'ch' but round 'vb' was imported in 'en'"), \
            session_scope(settings.db_url) as s:
        store_results(s, vistory_round, ch)
    bad = write_summary(tmp_path / "bad" / "summary.json", json.dumps({"run": {}, "metrics": {}}))
    with pytest.raises(SummaryFormatError), session_scope(settings.db_url) as s:
        store_results(s, vistory_round, bad)
    good = write_summary(tmp_path / "good" / "summary.json", summary_json())
    with pytest.raises(RoundError, match="--split 'half'"), session_scope(settings.db_url) as s:
        store_results(s, vistory_round, good, split="half")
    src = tmp_path / "src"
    make_image(src / "a.png")
    (src / "s.jsonl").write_text('{"id": "x", "story_id": "01", "frame_index": 1, "prompt": "p"}\n')
    with session_scope(settings.db_url) as s:
        create_round(s, settings.store_dir, "plain", src / "s.jsonl")
    with pytest.raises(RoundError, match="round 'plain' was not imported from ViStoryBench"), \
            session_scope(settings.db_url) as s:
        store_results(s, "plain", good)
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(BenchmarkResult)) == 0
