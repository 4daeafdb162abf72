"""Smoke run of benchmarks/train_bench.py on the trunk cache path (seconds, tiny sizes)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_bench.py"


def test_train_bench_times_cached_steps_and_the_trunk():
    small = ["model.input_size=64", "model.aerial_input_size=64", "model.clusters=8",
             "train.batch_size=8", "data.aerial_only_per_batch=4"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "steps", "--config", "cpu-pretrained", "--steps", "2",
         "--threads", "1", *small],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trunk cache build:" in result.stdout and "(112, 4, 4) float16" in result.stdout
    assert "cpu-pretrained" in result.stdout and "images/s" in result.stdout
