"""Training configs from defaults, a YAML file and command-line overrides: typed, with errors by key."""

import pytest

from storyloop.dpo.config import DPOConfig
from storyloop.generation.config import Stage1Config


def test_yaml_scientific_notation_and_numbers_for_text_become_the_knobs_types(tmp_path):
    # PyYAML (YAML 1.1) reads `1e-4` as the text "1e-4"; a learning rate it is all the same.
    path = tmp_path / "dpo.yaml"
    path.write_text("learning_rate: 1e-4\nbeta: 5e2\nround: 7\nlevel_weights: [1, 2, 4]\ninclude_gold: true\n")
    cfg = DPOConfig.from_sources(path, max_steps="20")
    assert (cfg.learning_rate, cfg.beta, cfg.round, cfg.max_steps) == (1e-4, 500.0, "7", 20)
    assert cfg.level_weights == (1.0, 2.0, 4.0) and cfg.include_gold is True
    assert Stage1Config.from_sources(None, learning_rate="2e-5", model="m").learning_rate == 2e-5


def test_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "dpo.yaml"
    path.write_text("beta: 100\nrank: 8\n")
    cfg = DPOConfig.from_sources(path, beta=300, max_steps=None)  # None: not given
    assert (cfg.beta, cfg.rank, cfg.max_steps) == (300.0, 8, DPOConfig().max_steps)


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": "abc"}, r"learning_rate \(command line\): input should be a valid number.*'abc'"),
    ({"max_steps": 1.5}, r"max_steps \(command line\): input should be a valid integer"),
    ({"level_weights": "x"}, r"level_weights \(command line\): input should be a valid tuple"),
    ({"beta": -1}, r"^beta must be positive$"),  # the config's own checks keep their words
    ({"learning_rte": 1e-4}, r"unknown key\(s\) learning_rte; known: .*learning_rate"),
])
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        DPOConfig.from_sources(None, **overrides)


def test_bad_yaml_values_name_the_file(tmp_path):
    path = tmp_path / "stage1.yaml"
    path.write_text("max_train_steps: ten\n")
    with pytest.raises(ValueError, match=rf"max_train_steps \({path}\): input should be a valid integer.*'ten'"):
        Stage1Config.from_sources(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="expected KEY: VALUE lines"):
        Stage1Config.from_sources(path)
    path.write_text("steps: 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) steps"):
        Stage1Config.from_sources(path)


def test_no_and_yes_are_text_and_only_true_false_are_booleans(tmp_path):
    from storyloop.cli.common import parse_overrides

    cfg = Stage1Config.from_sources(None, **parse_overrides(["mixed_precision=no", "gradient_checkpointing=false"]))
    assert cfg.mixed_precision == "no" and cfg.gradient_checkpointing is False
    path = tmp_path / "c.yaml"
    path.write_text("mixed_precision: no\ngradient_checkpointing: true\n")
    cfg = Stage1Config.from_sources(path)
    assert cfg.mixed_precision == "no" and cfg.gradient_checkpointing is True
