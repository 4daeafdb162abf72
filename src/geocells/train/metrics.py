"""``metrics.csv`` (train and val rows) and ``loss.png`` of a run."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from geocells.outputs import OutputFolder

logger = logging.getLogger(__name__)

METRICS_FILE, PLOT_FILE = "metrics.csv", "loss.png"
TRAIN_KEYS = ("loss", "loss_ground_aerial", "loss_ground_prototype", "loss_aerial_prototype")
VAL_KEYS = (
    "val_aerial_r100",
    "val_prototype_r100",
    "val_hybrid_r100",
    "val_prototype_cell_acc",
    "val_aerial_median_rank",
    "val_queries",
    "val_gallery",
)
COLUMNS = (
    "kind",
    "step",
    "epoch",
    *TRAIN_KEYS,
    "lr",
    "samples_per_s",
    "touched_rows",
    "data_wait_s",
    "skipped",
    *VAL_KEYS,
    "seconds",
)


class MetricsLog:
    """Appends rows to ``RUN/metrics.csv``: a ``train`` row every ``log_every`` steps
    (means over the window) and a ``val`` row per validation. ``run`` None (a process
    other than the main one) records nothing."""

    def __init__(
        self, run: OutputFolder | None, truncate_after: int | None = None, log_every: int = 10
    ):
        self.run = run
        self.enabled = run is not None
        self.path = run.path / METRICS_FILE if run is not None else None  # None: off
        self.log_every = max(1, log_every)
        self.window: list[dict] = []
        self.samples_per_s = 0.0
        self.last_val_s = 0.0
        if self.enabled:
            self._start(truncate_after)

    def _start(self, truncate_after: int | None) -> None:
        """New file, or (on resume) keep only rows up to the checkpoint's step."""
        rows = []
        if truncate_after is not None and self.path.is_file():
            with self.path.open() as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= truncate_after]
        # Atomic: a failure here (a full disk) leaves the previous metrics.csv whole.
        with self.run.file(METRICS_FILE) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def _write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, COLUMNS).writerow(row)

    def train(
        self,
        step: int,
        epoch: int,
        logs: dict,
        lr: float,
        samples: int,
        seconds: float,
        skipped: int,
    ) -> None:
        """Record one step; every ``log_every`` steps write the window's means."""
        self.window.append({**logs, "samples": samples, "seconds": seconds, "skipped": skipped})
        rate = samples / max(seconds, 1e-9)
        self.samples_per_s = (
            rate if self.samples_per_s == 0 else 0.9 * self.samples_per_s + 0.1 * rate
        )
        if step % self.log_every:
            return
        n = len(self.window)
        row = {"kind": "train", "step": step, "epoch": epoch, "lr": f"{lr:.3g}"}
        for key in (*TRAIN_KEYS, "touched_rows", "data_wait_s"):
            row[key] = f"{sum(w[key] for w in self.window) / n:.6f}"
        seconds_total = sum(w["seconds"] for w in self.window)
        row["samples_per_s"] = f"{sum(w['samples'] for w in self.window) / seconds_total:.2f}"
        row["skipped"] = sum(w["skipped"] for w in self.window)
        row["seconds"] = f"{seconds_total:.3f}"
        self._write(row)
        self.window = []

    def val(self, step: int, epoch: int, results: dict, seconds: float) -> None:
        """Record one validation."""
        self.last_val_s = seconds
        row = {"kind": "val", "step": step, "epoch": epoch, "seconds": f"{seconds:.2f}"}
        row.update({k: f"{results[k]:.4f}" for k in VAL_KEYS})
        self._write(row)

    def plot(self) -> Path | None:
        """Write ``loss.png`` (train loss terms; val R@1 on a second axis)."""
        if not self.enabled or not self.path.is_file():
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = read_metrics(self.path)
        train = [r for r in rows if r["kind"] == "train"]
        val = [r for r in rows if r["kind"] == "val"]
        figure, axis = plt.subplots(figsize=(8, 4.5))
        for key in TRAIN_KEYS:
            axis.plot([int(r["step"]) for r in train], [float(r[key]) for r in train], label=key)
        axis.set_xlabel("step")
        axis.set_ylabel("training loss")  # MS, or softmax prototype terms
        axis.legend(loc="upper left", fontsize=8)
        if val:
            recall_axis = axis.twinx()
            keys = ("val_aerial_r100", "val_prototype_r100", "val_hybrid_r100")
            for key, color in zip(keys, ("C4", "C5", "C6"), strict=True):
                steps = [int(r["step"]) for r in val]
                recall_axis.plot(steps, [float(r[key]) for r in val], "o--", color=color, label=key)
            recall_axis.set_ylabel("val R@1 within 100 m")
            recall_axis.set_ylim(0, 1)
            recall_axis.legend(loc="upper right", fontsize=8)
        figure.tight_layout()
        with self.run.file(PLOT_FILE) as tmp:
            figure.savefig(tmp, dpi=100)
        plt.close(figure)
        return self.path.with_name(PLOT_FILE)


def read_metrics(path: Path) -> list[dict]:
    """Rows of a ``metrics.csv`` as dicts of strings."""
    with Path(path).open() as handle:
        return list(csv.DictReader(handle))
