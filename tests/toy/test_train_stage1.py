"""`storyloop toy train-stage1`: bad knobs and a --from that is no LoRA are refused before any work."""

from typer.testing import CliRunner

from storyloop.cli.main import app


def test_a_bad_knob_or_a_missing_lora_to_start_from_is_refused_before_any_work(tmp_path):
    runner = CliRunner()
    out = tmp_path / "stage1"
    bad = runner.invoke(app, ["toy", "train-stage1", "--out", str(out), "--mixed-precision", "fp8"])
    assert bad.exit_code == 2 and "mixed_precision must be one of" in bad.output
    missing = runner.invoke(app, ["toy", "train-stage1", "--out", str(out), "--from", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "not a storyloop LoRA folder" in missing.output
    assert not out.exists()
