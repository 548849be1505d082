"""`storyloop vistory import|export|results` and `round show` side by side, through the console command."""

import pytest
from typer.testing import CliRunner

from storyloop.cli import common
from storyloop.cli.main import app
from tests.vistory.helpers import LEADERBOARD, build_dataset, summary_json, write_summary
from tests.vistory.test_export import add_candidates


@pytest.fixture
def cli(tmp_path, db_url, monkeypatch):
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STORYLOOP_DB_URL", db_url)
    monkeypatch.setenv("STORYLOOP_ADMIN_PASSWORD", "a-long-admin-password")
    monkeypatch.setattr(common.console, "width", 250)  # whole table rows, as on a wide terminal
    runner = CliRunner()

    def run(*args, expect=0):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == expect, result.output
        result.flat = " ".join(result.output.replace("│", " ").split())  # table cells as words
        return result

    run("init")
    return run


def test_import_export_results_and_round_show_side_by_side(cli, tmp_path, settings_for):
    data = build_dataset(tmp_path / "ds")
    out = cli("vistory", "import", data, "--round", "vb", "--split", "lite", "--lang", "ch", "--stories", "01,08",
              "--refs-per-character", "1", "-k", "2").flat
    assert "Created round 'vb' from ViStoryBench (lite, ch): 2 of the split's 2 story(ies) here, 5 shot(s); 5 " \
           "scenario(s) added (0 already there), 4 reference(s), 3 new image(s)" in out
    assert "Unchanged: round 'vb'" in cli("vistory", "import", data, "--round", "vb", "--split", "lite", "--lang",
                                          "ch", "--stories", "01,08", "--refs-per-character", "1", "-k", "2").flat
    cli("vistory", "import", data, "--round", "vb2", "--split", "lite", "--lang", "ch", "--refs-per-character", "1")
    add_candidates(settings_for(tmp_path), "vb")
    outputs = tmp_path / "outputs"
    out = cli("vistory", "export", "--round", "vb", "--method", "storyloop-r1", "--out", outputs,
              "--timestamp", "20260102_030405").flat
    assert "Exported 5 shot(s) of 2 story(ies)" in out and "5 first (not judged)" in out
    assert (f"python bench_run.py --outputs_path {outputs} --method storyloop-r1 --mode base --language ch "
            "--split lite --timestamp 20260102_030405") in out
    assert (outputs / "storyloop-r1/base/ch/20260102_030405/01/shots/shot_03.png").is_file()

    for name, method, stamp in (("vb", "UNO", "20260105_100000"), ("vb2", "StoryGen", "20260105_110000")):
        path = write_summary(tmp_path / name / "summary.json",
                             summary_json(f"storyloop-{name}", language="ch", timestamp=stamp,
                                          figures=LEADERBOARD[method]))
        assert f"Stored storyloop-{name}/base/ch (lite) evaluated {stamp} with round '{name}'" in \
            cli("vistory", "results", path, "--round", name).flat
    shown = cli("round", "show", "vb", "vb2").flat
    assert "source benchmark vistorybench" in shown and "01-03" in shown
    assert "vb storyloop-vb/base ch lite 20260105_100000 39.1 60.2 45.7 60.9 89.5 79.6 5.231 0.125" in shown
    assert "vb2 storyloop-vb2/base ch lite 20260105_110000 37.1 53.1 37.1 51.2 80.3 41.4 5.231 0.125" in shown
    assert "20260105_110000" not in cli("round", "show", "vb").flat


def test_user_mistakes_are_one_clear_line_and_write_nothing(cli, tmp_path):
    data = build_dataset(tmp_path / "ds")
    (data / "ViStory" / "08" / "story.json").write_text("{", encoding="utf-8")
    err = cli("vistory", "import", data, "--round", "vb", expect=1).flat
    assert "story 08: story.json: not valid JSON" in err and "nothing was imported" in err
    assert "Traceback" not in err
    assert "vb" not in cli("round", "list").flat
    assert "no round named 'vb'" in cli("vistory", "export", "--round", "vb", "--method", "m", "--out",
                                        tmp_path / "o", expect=1).flat
    bad = write_summary(tmp_path / "summary.json", {"run": {"method": "m", "mode": "base", "language": "en",
                                                            "timestamp": "20260101_000000"},
                                                    "metrics": {"clip_score": {"metrics": {"score": 1.0}}}})
    err = cli("vistory", "results", bad, "--round", "vb", expect=1).flat
    assert f"{bad}: field 'metrics.clip_score': unknown metric" in err
    assert "--pick 'best'" in cli("vistory", "export", "--round", "vb", "--method", "m", "--out", tmp_path / "o",
                                  "--pick", "best", expect=1).flat
    assert not (tmp_path / "o").exists()


@pytest.fixture
def settings_for(db_url):
    from storyloop.settings import Settings

    return lambda tmp_path: Settings.resolve(data_dir=tmp_path / "data", db_url=db_url)
