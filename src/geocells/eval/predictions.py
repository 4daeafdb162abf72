"""``predictions.parquet``: every query's answers under every method, for per-query study.

One row per (query, method), queries in split order and, within a query, methods in
``metrics.json`` order. Columns:

=================  ==============  ===================================================
``query_id``       string          the manifest's ``image_id``
``path``           string          the query image
``lat``, ``lon``   float64         its true position (WGS84 degrees)
``method``         string          ``hybrid``, ``aerial_only``, ... (``metrics.json``)
``rank``           int64           1 + items scoring above the best item within 200 m
                                   (0: none within 200 m), the paper's rank
``error_m``        float64         distance of the top-1 answer to the true position
``top_token``      list<string>    S2 tokens (database cell level) of the top-k answers
``top_lat``,       list<float64>   positions of the top-k answers (cell centres; for the
``top_lon``                        image-retrieval baselines the retrieved image's)
``top_score``      list<float32>   their scores (each method's own similarity)
``top_error_m``    list<float64>   their distances to the true position
=================  ==============  ===================================================

The file's metadata holds ``split``, ``cell_level``, ``top_k`` and the method labels
(``geocells.methods`` as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from geocells.geo import cell_to_token, latlng_to_cell
from geocells.outputs import OutputFolder

PREDICTIONS_FILE = "predictions.parquet"


def _lists(values: np.ndarray):
    """A pyarrow list array of the rows of ``values [N, k]``."""
    import pyarrow as pa

    values = np.asarray(values)
    offsets = np.arange(0, values.size + 1, max(values.shape[1], 1), dtype=np.int32)
    if values.shape[1] == 0:
        offsets = np.zeros(len(values) + 1, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))


def predictions_table(
    queries: Any, results: dict, labels: dict[str, str], cell_level: int, split: str
):
    """The ``pyarrow.Table`` of the module docstring from ``QuerySet`` ``queries``, every
    method's ``MethodResult`` by name and the methods' labels."""
    import pyarrow as pa

    parts = []
    for name, result in results.items():
        k = result.top_index.shape[1]
        cells = latlng_to_cell(result.top_lat.reshape(-1), result.top_lon.reshape(-1), cell_level)
        tokens = cell_to_token(cells).astype(str).reshape(-1, k)
        scores = result.top_scores
        if scores is None:
            scores = np.full(result.top_index.shape, np.nan, np.float32)
        columns = {
            "query_id": pa.array(np.asarray(queries.image_id).astype(str)),
            "path": pa.array(np.asarray(queries.path).astype(str)),
            "lat": pa.array(np.asarray(queries.lat, np.float64)),
            "lon": pa.array(np.asarray(queries.lon, np.float64)),
            "method": pa.array([name] * len(queries.lat)),
            "rank": pa.array(np.asarray(result.ranks, np.int64)),
            "error_m": pa.array(np.asarray(result.errors_m, np.float64)),
            "top_token": _lists(tokens),
            "top_lat": _lists(np.asarray(result.top_lat, np.float64)),
            "top_lon": _lists(np.asarray(result.top_lon, np.float64)),
            "top_score": _lists(np.asarray(scores, np.float32)),
            "top_error_m": _lists(np.asarray(result.topk_errors_m, np.float64)),
        }
        parts.append(pa.table(columns))
    table = pa.concat_tables(parts)
    # Query-major: a query's rows under every method are adjacent.
    order = np.lexsort((np.repeat(np.arange(len(parts)), len(queries.lat)),
                        np.tile(np.arange(len(queries.lat)), len(parts))))  # fmt: skip
    table = table.take(pa.array(order))
    metadata = {
        "geocells.split": split,
        "geocells.cell_level": str(cell_level),
        "geocells.top_k": str(max(r.top_index.shape[1] for r in results.values())),
        "geocells.methods": json.dumps(labels),
    }
    return table.replace_schema_metadata(metadata)


def write_predictions(
    out: OutputFolder,
    queries: Any,
    results: dict,
    labels: dict[str, str],
    cell_level: int,
    split: str,
) -> Path:
    """Write ``predictions_table`` to ``out``'s ``PREDICTIONS_FILE`` (atomically)."""
    import pyarrow.parquet as pq

    table = predictions_table(queries, results, labels, cell_level, split)
    with out.file(PREDICTIONS_FILE) as tmp:
        pq.write_table(table, tmp)
    return out.path / PREDICTIONS_FILE
