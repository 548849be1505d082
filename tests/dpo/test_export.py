"""Export round trips: what a researcher writes is what `datasets` reads back."""

import io

import datasets
import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from storyloop.cli.main import app
from storyloop.db import session_scope
from storyloop.db.assets import asset_path
from storyloop.db.models import Candidate, Role, User
from storyloop.db.users import add_user
from storyloop.dpo.export import ExportError, export_round
from tests.dpo.helpers import A, C, P, judge, judged_round


@pytest.fixture
def judged(settings, tmp_path):
    sids, cands, users = judged_round(settings, tmp_path, scenarios=2, references=2)
    for sid, cs in zip(sids, cands):
        for u in users.values():
            judge(settings, sid, cs, u, [P, A, C, P], ranks={0: 1, 3: 2})
    with session_scope(settings.db_url) as s:
        add_user(s, "rita", "password123", Role.researcher)
    return sids, cands


def researcher(session):
    return session.scalar(select(User).where(User.username == "rita"))


def test_parquet_export_round_trips_through_datasets(settings, judged, tmp_path):
    sids, cands = judged
    with session_scope(settings.db_url) as s:
        summary = export_round(s, settings, "r1", tmp_path / "out", "parquet", researcher(s))
        winner_bytes = asset_path(settings.store_dir, s.get(Candidate, cands[0][0]).asset).read_bytes()
    assert summary.rows == 2 * 3  # per scenario 1 winner x 3 losers
    ds = datasets.load_dataset("parquet", data_files=str(summary.path), split="train")
    assert len(ds) == 6
    for col in ("caption", "jpg_0", "jpg_1", "label_0", "label_1", "are_different", "has_label", "ranking_id",
                "user_id", "references", "scenario_id", "story_id", "round", "loser_level", "annotators"):
        assert col in ds.column_names
    row = ds[0]
    preferred = row["jpg_0"] if row["label_0"] == 1.0 else row["jpg_1"]
    assert preferred == winner_bytes and row["label_0"] + row["label_1"] == 1.0
    assert Image.open(io.BytesIO(row["references"][0])).size == (32, 32) and len(row["references"]) == 2
    assert row["reference_characters"] == [None, None]  # a flat list: one unnamed character
    assert sorted(set(ds["loser_level"])) == ["aesthetics", "anatomy", "consistency"]
    assert row["annotators"] == ["ann-r1", "bob-r1", "cat-r1"]
    assert {r["label_0"] for r in ds} == {0.0, 1.0}  # the winner is not always on the left


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_export_names_each_references_character_in_slot_order(settings, tmp_path, fmt):
    sids, cands, users = judged_round(settings, tmp_path, references=3, characters=["Mia", "Tom", "Tom"])
    for u in users.values():
        judge(settings, sids[0], cands[0], u, [P, A, C, P], ranks={0: 1, 3: 2})
    with session_scope(settings.db_url) as s:
        add_user(s, "rita", "password123", Role.researcher)
        summary = export_round(s, settings, "r1", tmp_path / "out", fmt, researcher(s))
    ds = datasets.load_dataset(fmt if fmt == "parquet" else "json", data_files=str(summary.path), split="train")
    assert {tuple(r) for r in ds["reference_characters"]} == {("Mia", "Tom", "Tom")}
    assert all(len(r) == 3 for r in ds["references"])


def test_anonymized_pseudonyms_are_stable_and_hide_names(settings, judged, tmp_path):
    with session_scope(settings.db_url) as s:
        a = export_round(s, settings, "r1", tmp_path / "a", "parquet", researcher(s), anonymize=True)
        b = export_round(s, settings, "r1", tmp_path / "b", "parquet", researcher(s), anonymize=True)
    da = datasets.load_dataset("parquet", data_files=str(a.path), split="train")
    db = datasets.load_dataset("parquet", data_files=str(b.path), split="train")
    assert da["annotators"] == db["annotators"]
    assert all(name.startswith("annotator-") for name in da[0]["annotators"])
    assert "ann-r1" not in (tmp_path / "a" / "train.parquet").read_bytes().decode("latin-1")


def test_hf_and_jsonl_formats(settings, judged, tmp_path):
    with session_scope(settings.db_url) as s:
        export_round(s, settings, "r1", tmp_path / "hf", "hf", researcher(s))
        j = export_round(s, settings, "r1", tmp_path / "js", "jsonl", researcher(s))
    assert len(datasets.load_from_disk(str(tmp_path / "hf" / "dataset"))) == 6
    ds = datasets.load_dataset("json", data_files=str(j.path), split="train")
    assert (tmp_path / "js" / ds[0]["jpg_0"]).is_file()


def test_annotators_may_not_export(settings, judged, tmp_path):
    with session_scope(settings.db_url) as s:
        ann = s.scalar(select(User).where(User.username == "ann-r1"))
        with pytest.raises(ExportError, match="researchers and admins only"):
            export_round(s, settings, "r1", tmp_path / "x", "parquet", ann)


def test_export_cli_checks_the_password(settings, judged, tmp_path, monkeypatch):
    monkeypatch.setenv("STORYLOOP_DB_URL", settings.db_url)
    monkeypatch.setenv("STORYLOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("STORYLOOP_PASSWORD", "wrong-password")
    bad = CliRunner().invoke(app, ["export", "--round", "r1", "--out", str(tmp_path / "o"), "--user", "rita"])
    assert bad.exit_code == 1 and "wrong username or password" in bad.output
    monkeypatch.setenv("STORYLOOP_PASSWORD", "password123")
    ok = CliRunner().invoke(app, ["export", "--round", "r1", "--out", str(tmp_path / "o"), "--user", "rita"])
    assert ok.exit_code == 0 and "Exported 6 pair(s)" in ok.output
