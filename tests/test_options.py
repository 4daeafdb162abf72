"""Option checks shared by every subcommand (issue 16, cases 5 and 9: sizes, top-k, splits)."""

import numpy as np
import pytest

from fixtures_logs import captured_warnings
from geocells.cli import main
from geocells.commands.validate import SPLIT_NAMES
from geocells.config import ConfigError, resolve_config
from geocells.data.manifest import SPLITS


def test_the_cli_knows_the_manifest_splits():
    assert SPLIT_NAMES == SPLITS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["locate", "DB", "x.jpg", "--batch-size", "0"], "argument --batch-size: must be >= 1"),
        (["locate", "DB", "x.jpg", "--threads", "-1"], "argument --threads: must be >= 0"),
        (["eval", "DB", "--out", "R", "--top-k", "0"], "argument --top-k: must be >= 1, got 0"),
        (["eval", "DB", "--out", "R", "--split", "tset"], "unknown split 'tset'; valid: train"),
        (["calibrate", "DB", "--split", "dev"], "argument --split: unknown split 'dev'"),
        (["calibrate", "DB", "--kappa-steps", "0"], "argument --kappa-steps: must be >= 1"),
        (["index", "RUN", "--out", "DB", "--batch-size", "-3"], "--batch-size: must be >= 1"),
        (["index", "RUN", "--out", "DB", "--cell-level", "31"], "S2 levels are 0..30, got 31"),
        (["cells", "--region", "bedenl", "--level", "5", "--chunk-size", "0", "--count"], ">= 1"),
        (["dataset", "check", "D", "--image-sample", "0"], "--image-sample: must be >= 1"),
        (["serve", "DB", "--queue-size", "0"], "argument --queue-size: must be >= 1"),
        (["serve", "DB", "--port", "70000"], "ports are 1..65535"),
        (["serve", "DB", "--max-upload-mb", "0"], "argument --max-upload-mb: must be > 0"),
        (["locate", "DB", "x.jpg", "--top-k", "two"], "want an integer, got 'two'"),
    ],
)
def test_bad_option_values_stop_the_command_naming_the_option(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [("top_k=0", "eval: top_k must be >= 1, got 0"), ("batch_size=-1", "eval: batch_size")],
)
def test_eval_overrides_are_checked_too(override, message):
    from geocells.eval.evaluate import EvalOptions

    with pytest.raises(ConfigError, match=message):
        resolve_config(EvalOptions, None, [override])


def test_calibrate_settings_are_checked():
    from geocells.calibrate.stage import CalibrateConfig

    with pytest.raises(ConfigError, match="calibrate: kappa_steps must be >= 1"):
        resolve_config(CalibrateConfig, None, ["kappa_steps=0"])
    with pytest.raises(ConfigError, match="kappa_min <= kappa_max"):
        resolve_config(CalibrateConfig, None, ["kappa_min=5", "kappa_max=1"])


def test_a_truncated_embedding_cache_is_named_and_rebuilt(micro_dataset, tmp_path, caplog):
    from geocells.data.dataset import Dataset
    from geocells.eval.evaluate import REPORT_OUTPUT, EvalOptions, embed_split
    from geocells.outputs import OutputFolder

    cache = tmp_path / "cache"
    cache.mkdir()
    np.savez(cache / "train-m.npz", image_id=np.array(["a"]), embeddings=np.zeros((1, 4)))
    whole = (cache / "train-m.npz").read_bytes()
    (cache / "train-m.npz").write_bytes(whole[: len(whole) // 2])
    empty = Dataset.open(micro_dataset).manifest.split("train")

    class Encoder:
        dim = 4

    with captured_warnings(caplog, "geocells.eval.evaluate"):
        report = OutputFolder(tmp_path, REPORT_OUTPUT)
        queries = embed_split(Encoder(), empty, report, EvalOptions(progress=False), "train", "m")
    assert len(queries.embeddings) == 0
    assert f"ignoring unreadable cache {cache / 'train-m.npz'}" in caplog.text


def test_training_sizes_are_checked():
    from geocells.train.config import experiment_config

    with pytest.raises(ConfigError, match="train: checkpoint_every must be >= 1, got 0"):
        experiment_config("tiny", ["train.checkpoint_every=0"])
    with pytest.raises(ConfigError, match="data: workers must be >= 0, got -2"):
        experiment_config("tiny", ["data.workers=-2"])


def test_declared_limits_are_checked_when_resolving_and_for_a_config_built_in_python(tmp_path):
    """``setting(at_least=, one_of=)`` limits and the ``cross_check`` hooks are checked by
    ``resolve_config`` (one resolve, one check); a config built in Python is checked by
    ``check_config``, which the trainer runs before it writes anything."""
    import dataclasses

    from geocells.train.config import (
        ExperimentConfig,
        TrainConfig,
        check_config,
        experiment_config,
    )
    from geocells.train.trainer import run

    with pytest.raises(ConfigError, match="train: batch_size must be >= 2, got 1"):
        experiment_config("tiny", ["train.batch_size=1"])
    with pytest.raises(ConfigError, match=r"optim\.schedule 'linear'; valid: cosine, constant"):
        experiment_config("tiny", ["optim.schedule=linear"])
    with pytest.raises(ConfigError, match=r"data\.prototype_level \(16\) must not exceed"):
        experiment_config("tiny", ["data.cell_level=15", "data.prototype_level=16"])
    with pytest.raises(ConfigError, match=r"data.pano_fov_deg \[100.0, 80.0\]"):
        experiment_config("tiny", ["data.pano_fov_deg=[100,80]"])
    built = ExperimentConfig(train=TrainConfig(device="tpu"))
    with pytest.raises(ConfigError, match=r"train\.device 'tpu'; valid: auto, cpu, cuda"):
        check_config(built)
    bad = dataclasses.replace(ExperimentConfig(), train=TrainConfig(log_every=0))
    with pytest.raises(ConfigError, match="train: log_every must be >= 1, got 0"):
        run(bad, tmp_path / "no-dataset", tmp_path / "run")
    assert not (tmp_path / "run").exists()
