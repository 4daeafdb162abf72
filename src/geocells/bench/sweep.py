"""Other search settings on the benchmark's index, each timed beside the index's own.

A setting is ``NPROBExRERANK``. Its agreement and batch-64 time cover all queries; its
batch-1 time covers the first ``single_count`` queries, **alternating query by query**
(and which goes first) with the index's own setting, so a load change on the shared
machine hits both alike and the ratio of the two columns is what the setting costs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from geocells.bench.timing import batch64, side_by_side


def parse_setting(setting: str) -> tuple[int, int]:
    """``"362x512"`` -> (362, 512); ValueError for anything else."""
    parts = str(setting).split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"sweep setting {setting!r} is not NPROBExRERANK, e.g. 64x128")
    return int(parts[0]), int(parts[1])


@dataclasses.dataclass
class _WithParams:
    """``searcher`` searching with ``params`` (set before each call): one setting of the
    one index, for ``timing.side_by_side`` and ``timing.batch64``."""

    searcher: object
    params: object

    def search(self, queries: np.ndarray, top_k: int, **kwargs):
        self.searcher.params = self.params
        return self.searcher.search(queries, top_k, **kwargs)


def measure_sweep(
    searcher,
    settings: list[str],
    queries: np.ndarray,
    exact_rows: np.ndarray,
    top_k: int,
    single_count: int = 200,
) -> list[dict]:
    """One dict per setting: nprobe, rerank, top-1 agreement with ``exact_rows`` (batch 64),
    batch-1 wall/CPU ms of the setting and of the searcher's own params alternated with
    it, batch-64 wall/CPU ms. The searcher's params are restored."""
    own = searcher.params
    found = []
    try:
        for setting in settings:
            probes, rerank = parse_setting(setting)
            other = _WithParams(searcher, dataclasses.replace(own, nprobe=probes, rerank=rerank))
            single = side_by_side(
                {"setting": other, "own": _WithParams(searcher, own)},
                queries[:single_count],
                top_k,
            )
            rows, batch = batch64(other, queries, top_k)
            found.append({
                "nprobe": probes,
                "rerank": rerank,
                "top1_agreement": float(np.mean(rows[:, 0] == exact_rows[:, 0])),
                **batch,
                "ann_ms_batch1_mean": single["setting"]["ann_ms_batch1_mean"],
                "ann_cpu_ms_batch1": single["setting"]["ann_cpu_ms_batch1"],
                "own_ms_batch1_mean": single["own"]["ann_ms_batch1_mean"],
                "own_cpu_ms_batch1": single["own"]["ann_cpu_ms_batch1"],
            })  # fmt: skip
    finally:
        searcher.params = own
    return found
