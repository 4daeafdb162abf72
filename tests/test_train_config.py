"""The experiment config: resolved once from a preset (or a run's config.yaml) + overrides."""

import pytest

from geocells.config import ConfigError, load_config, save_config
from geocells.train.config import ExperimentConfig, experiment_config, resume_changes


def test_resume_from_a_run_folder_starts_from_its_config_yaml(tmp_path):
    trained = experiment_config("tiny", ["loss.alpha=3.5", "data.pano_fov_deg=[70,90]"])
    save_config(trained, tmp_path / "config.yaml")
    # --config is ignored on resume: the run's own settings are the base, overrides on top
    resumed = experiment_config("cpu-small", ["train.max_steps=9"], resume_from=tmp_path)
    assert isinstance(resumed, ExperimentConfig)
    assert resumed.model == trained.model and resumed.loss.alpha == 3.5
    assert resumed.data == trained.data and resumed.train.max_steps == 9
    assert resume_changes(trained, resumed) == []  # train.* may change on resume


def test_resume_from_a_folder_without_config_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*config\.yaml"):
        experiment_config("tiny", resume_from=tmp_path)


def test_resume_changes_lists_keys_outside_train_and_refit(tmp_path):
    saved = experiment_config("tiny")
    save_config(saved, tmp_path / "config.yaml")
    reread = load_config(ExperimentConfig, tmp_path / "config.yaml")
    assert resume_changes(reread, saved) == []  # a YAML round trip (tuple -> list) is no change
    changed = experiment_config(
        "tiny", ["loss.alpha=3", "data.max_shift_m=7", "train.epochs=99", "refit.epochs=2"]
    )
    assert resume_changes(reread, changed) == ["data.max_shift_m", "loss.alpha"]
