"""The commands behave alike: progress bars, defaults in --help, config key typos, exit
statuses, and what reaches the user's terminal."""

import argparse
import io
import os
import pty
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geocells.cli import build_parser, main
from geocells.config import ConfigError, resolve_config

ROOT = Path(__file__).parents[1]
LONG_COMMANDS = ("synth", "import", "train", "refit", "index", "calibrate", "locate", "eval")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("command", [*LONG_COMMANDS, "cells"])
def test_every_long_command_takes_no_progress(command):
    options = {o for a in _subparsers(build_parser())[command]._actions for o in a.option_strings}
    assert "--no-progress" in options


def _cells_command(tmp_path: Path, *extra: str) -> list[str]:
    out = tmp_path / f"cells{len(extra)}.parquet"
    region = ["--region", "bbox:50.0,4.0,50.6,4.6", "--level", "13", "--chunk-size", "64"]
    return [sys.executable, "-m", "geocells", "cells", *region, "--out", str(out), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def test_progress_bars_only_on_a_terminal(tmp_path):
    # stderr to a pipe (a log file): no bar, so no carriage-return frames
    logged = subprocess.run(_cells_command(tmp_path), env=_env(), capture_output=True, timeout=120)
    assert logged.returncode == 0, logged.stderr
    assert b"\r" not in logged.stderr and b"wrote" in logged.stderr

    def on_terminal(command):
        leader, follower = pty.openpty()
        with subprocess.Popen(command, env=_env(), stderr=follower, stdout=subprocess.DEVNULL):
            pass
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        return b"".join(chunks)

    assert b"\r" in on_terminal(_cells_command(tmp_path, "--overwrite"))  # a bar on a terminal
    quiet = on_terminal(_cells_command(tmp_path, "--overwrite", "--no-progress"))
    assert b"\r" not in quiet.replace(b"\r\n", b"\n") and b"wrote" in quiet


def test_locate_writes_no_progress_frames_into_captured_stderr(micro_db, tmp_path, capsys):
    photo = tmp_path / "p.jpg"
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(photo)
    assert main(["locate", str(micro_db), str(photo), "--top-k", "2"]) == 0
    assert "\r" not in capsys.readouterr().err


def _help(*command: str) -> str:
    buffer = io.StringIO()
    parser = build_parser()
    for name in command:
        parser = _subparsers(parser)[name]
    parser.print_help(buffer)
    return " ".join(buffer.getvalue().split())  # argparse wraps lines


def test_help_shows_defaults_including_the_dataclass_ones():
    from geocells.calibrate.stage import CalibrateConfig
    from geocells.eval.evaluate import EvalOptions
    from geocells.serve.config import ServeConfig

    serve = _help("serve")
    assert f"--queue-size QUEUE_SIZE images queued or being decoded before 503; a request " \
        f"with more is 413 (default: {ServeConfig().queue_size})" in serve  # fmt: skip
    assert f"(default: {ServeConfig().body_timeout_s:g})" in serve
    assert f"(R@k) (default: {EvalOptions().top_k})" in _help("eval")
    assert f"(default: {CalibrateConfig().kappa_steps})" in _help("calibrate")
    locate = _help("locate")
    assert "docs/results.md (default: json)" in locate and "(default: 5)" in locate
    assert "(0: torch's choice) (default: 0)" in locate
    assert "(default: None)" not in locate and "(default: False)" not in locate
    continent = _help("bench", "continent")
    assert "S2 level of the cells (default: 16)" in continent
    assert "issue" not in continent.lower()


def test_every_option_with_a_value_says_its_default():
    silent = []
    for parser in _subparsers(build_parser()).values():
        for sub in [parser, *_subparsers(parser).values()]:
            sub.format_help()  # fills in the dataclass defaults
            formatter = sub._get_formatter()
            for action in sub._actions:
                if not action.option_strings or action.nargs == 0 or action.default is None:
                    continue
                if action.default is argparse.SUPPRESS:
                    continue
                if "default" not in formatter._get_help_string(action):
                    silent.append(f"{sub.prog} {action.option_strings[0]}")
    assert silent == []


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("optim.lrr=1e-3", "did you mean 'optim.lr'? valid keys under optim: optim.lr,"),
        ("lr=1e-3", "did you mean 'optim.lr'?"),
        ("train.max_step=3", "did you mean 'train.max_steps'?"),
    ],
)
def test_a_mistyped_config_key_suggests_the_closest(override, hint):
    from geocells.train.config import ExperimentConfig

    with pytest.raises(ConfigError, match="unknown config key") as caught:
        resolve_config(ExperimentConfig, None, [override])
    assert hint in str(caught.value)


def test_serve_takes_config_keys_and_names_a_typo(micro_db, tmp_path, capsys):
    from geocells.commands.serve import config_from_args

    preset = tmp_path / "serve.yaml"
    preset.write_text("max_side: 1024\nqueue_size: 64\n")
    argv = ["serve", str(micro_db), "--config", str(preset), "decode_threads=1", "--port", "9"]
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    assert (cfg.max_side, cfg.queue_size, cfg.decode_threads, cfg.port) == (1024, 64, 1, 9)
    assert cfg.db == str(micro_db) and cfg.max_files == 16  # the rest: the dataclass's
    assert main(["serve", str(micro_db), "max_sid=5"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'max_sid'; did you mean 'max_side'?" in err
    assert len(err.strip().splitlines()) == 1


def test_dataset_check_exit_status_follows_its_problems(micro_dataset, tmp_path, capsys):
    assert main(["dataset", "check", str(micro_dataset), "--images", "off"]) == 0
    assert "PROBLEM" not in capsys.readouterr().out
    import shutil

    broken = tmp_path / "dataset"
    shutil.copytree(micro_dataset, broken)
    next((broken / "ground").rglob("*.jpg")).unlink()
    assert main(["dataset", "check", str(broken), "--images", "off"]) == 1
    assert "PROBLEM:" in capsys.readouterr().out


def test_faiss_clustering_warnings_do_not_reach_the_terminal(capfd):
    from geocells.search.ivfpq import IVFPQParams, build_ivfpq_index

    rng = np.random.default_rng(0)
    aerial, proto = (rng.standard_normal((500, 32)).astype(np.float16) for _ in range(2))
    index, refiner = build_ivfpq_index(aerial, proto, IVFPQParams().resolved(500, 32), 1.0, False)
    assert index.ntotal == 500 and refiner.codes.shape == (500, 32)
    assert "WARNING clustering" not in capfd.readouterr().err  # before: 16 such lines


def test_pytorch_metric_learning_is_a_test_dependency_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = "pytorch-metric-learning"
    assert not any(dep.startswith(name) for dep in project["dependencies"])
    assert any(dep.startswith(name) for dep in project["optional-dependencies"]["dev"])
    for path in (ROOT / "src").rglob("*.py"):
        assert "pytorch_metric_learning" not in path.read_text(), path
