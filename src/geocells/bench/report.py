"""Markdown summary of a continent benchmark's ``results.json``."""

from __future__ import annotations

from geocells.bench.coldstart import cold_start_table

GIB = 1024**3

# name -> (check on results.json, target text), the targets of issue 7
TARGETS = {
    "resident": (lambda r: r["search"]["resident_bytes_per_cell"] <= 100, "≤ 100 B/cell"),
    "batch1": (lambda r: r["search"]["ann_ms_batch1_mean"] <= 5.0, "≤ 5 ms"),
    "agreement": (lambda r: r["search"]["top1_agreement"] >= 0.99, "≥ 0.99"),
    "build": (lambda r: r["index"]["build_s"] <= 45 * 60, "≤ 45 min"),
}


def _verdict(results: dict, name: str) -> str:
    """Target text plus 'met' / 'MISSED'."""
    check, text = TARGETS[name]
    return f"{text} ({'met' if check(results) else 'MISSED'})"


def _minutes(seconds: float | None) -> str:
    """Seconds as minutes, or 'not recorded' (stages finished by an older version)."""
    return "not recorded" if seconds is None else f"{seconds / 60:.1f} min"


def markdown_table(results: dict) -> str:
    """A table of the measured numbers with the targets of issue 7."""
    cells, codes, index, search = (results[k] for k in ("cells", "codes", "index", "search"))
    cfg = results["config"]
    params = index["params"]
    ratio_b1 = search["exact_ms_batch1_mean"] / max(search["ann_ms_batch1_mean"], 1e-9)
    ratio_all = search["exact_ms_batch_all"] / max(search["ann_ms_batch64"], 1e-9)
    rows = [
        ("cells", f"{cells['cells']:,}" + ("" if cells["covering_complete"] else " (capped)"), ""),
        ("covering time", f"{cells['covering_s']:.1f} s", ""),
        ("code generation (synthetic)", f"{codes['codes_s']:.1f} s", ""),
        ("float16 database on disk", f"{codes['database_bytes'] / GIB:.2f} GiB", ""),
        ("index build time", f"{index['build_s'] / 60:.1f} min", _verdict(results, "build")),
        ("index build CPU time (all threads)", _minutes(index.get("build_cpu_s")), ""),
        ("build peak anon RSS", f"{index['build_peak_anon_bytes'] / GIB:.2f} GiB", ""),
        ("build peak RSS (with memmap pages)", f"{index['build_peak_rss_bytes'] / GIB:.2f} GiB",
         ""),
        ("index size", f"{index['index_bytes'] / GIB:.3f} GiB", ""),
        ("resident bytes per cell", f"{search['resident_bytes_per_cell']:.1f}",
         _verdict(results, "resident")),
        ("compressed ms/query, batch 1 (mean / p50 / p95)",
         f"{search['ann_ms_batch1_mean']:.2f} / {search['ann_ms_batch1_p50']:.2f} / "
         f"{search['ann_ms_batch1_p95']:.2f}", _verdict(results, "batch1")),
        ("compressed ms/query, batch 64", f"{search['ann_ms_batch64']:.3f}", ""),
        ("compressed CPU ms/query, batch 1 / 64 (all threads)",
         f"{search['ann_cpu_ms_batch1']:.2f} / {search['ann_cpu_ms_batch64']:.3f}",
         "what a query costs on an idle machine"),
        ("compressed search peak anon RSS", f"{search['ann_peak_anon_bytes'] / GIB:.2f} GiB", ""),
        ("top-1 agreement with exact", f"{search['top1_agreement']:.4f}",
         _verdict(results, "agreement")),
        ("exact top-1 within compressed top-k", f"{search['exact_top1_in_ann_topk']:.4f}", ""),
        ("exact top-1 = query's cell", f"{search['exact_top1_is_target']:.3f}", ""),
        ("exact ms/query, batch 1", f"{search['exact_ms_batch1_mean']:.1f}",
         f"{ratio_b1:,.0f}× compressed"),
        (f"exact ms/query, batch {search['queries']}", f"{search['exact_ms_batch_all']:.2f}",
         f"{ratio_all:,.1f}× compressed batch 64"),
        ("exact search peak anon RSS", f"{search['exact_peak_anon_bytes'] / GIB:.2f} GiB", ""),
    ]  # fmt: skip
    lines = [
        f"# Continent benchmark: {cfg['region']}, level {cfg['level']}",
        "",
        f"Index: IVF{params['nlist']},PQ{params['pq_m']}x4fs ({params['layout']} layout, "
        f"{params.get('coarse', 'flat')} coarse quantiser), "
        f"nprobe {search.get('nprobe', cfg['nprobe'])}, re-rank {cfg['rerank']}; "
        f"κ = {cfg['kappa']}; "
        f"{cfg['threads']} threads; load average {results['load_before'][0]:.1f} before, "
        f"{results['load_after'][0]:.1f} after.",
        "",
        "| quantity | value | target / note |",
        "|---|---|---|",
        *(f"| {label} | {value} | {note} |" for label, value, note in rows),
        "",
    ]
    if "baseline_search" in results:
        lines += side_by_side_table(results)
    lines += cold_start_table(search.get("cold_start", []))
    if search.get("sweep"):
        lines += [
            "Other search settings on the same index and queries (batch 1: first 200 "
            "queries, alternating query by query with the index's own setting):",
            "",
            "| nprobe | re-rank | top-1 agreement | ms/query b1 (CPU) | own setting in the same "
            "alternation, ms b1 (CPU) | ms/query b64 (CPU) |",
            "|---|---|---|---|---|---|",
            *(
                f"| {row['nprobe']} | {row['rerank']} | {row['top1_agreement']:.4f} | "
                f"{row['ann_ms_batch1_mean']:.2f} ({row['ann_cpu_ms_batch1']:.2f}) | "
                f"{_own(row)} | "
                f"{row['ann_ms_batch64']:.3f} ({row['ann_cpu_ms_batch64']:.3f}) |"
                for row in search["sweep"]
            ),
            "",
        ]
    return "\n".join(lines)


# The targets of issue 23 for the compressed search (single machine, 2 cores).
TARGETS_23 = {"ms": 2.0, "agreement": 0.995, "bytes": 64.0}


def _index_name(params: dict) -> str:
    """``IVF65536,PQ64x4fs + SQ8 refine (fp16 finder)``-style name of an index's params."""
    name = f"IVF{params['nlist']},PQ{params['pq_m']}x4fs"
    if params.get("refine", "none") == "sq8":
        name += f" + SQ8 refine {params['rerank']} → exact {params.get('exact_rerank', 0)}"
    else:
        name += f", exact re-rank {params['rerank']}"
    if params.get("coarse") == "hnsw":
        name += f", {params.get('finder', 'flat')} list finder"
    return name


def side_by_side_table(results: dict) -> list[str]:
    """Lines of a markdown table: the current defaults next to the pre-issue-23 ones."""
    runs = {"before (baseline)": (results["baseline"], results["baseline_search"]),
            "now (defaults)": (results["index"], results["search"])}  # fmt: skip
    t = TARGETS_23

    def row(label, value, target=""):
        cells = " | ".join(value(i, s) for i, s in runs.values())
        return f"| {label} | {cells} | {target} |"

    return [
        "Side by side, same queries, batch-1 queries alternating between the two indexes:",
        "",
        "| | " + " | ".join(runs) + " | target (issue 23) |",
        "|---|---|---|---|",
        row("index", lambda i, s: _index_name(s["params"])),
        row("nprobe", lambda i, s: f"{s['nprobe']}"),
        row(
            "ms/query, batch 1 (mean / p50 / p95)",
            lambda i, s: (
                f"{s['ann_ms_batch1_mean']:.2f} / {s['ann_ms_batch1_p50']:.2f} / "
                f"{s['ann_ms_batch1_p95']:.2f}"
            ),
            f"≤ {t['ms']} ms",
        ),
        row("CPU ms/query, batch 1", lambda i, s: f"{s['ann_cpu_ms_batch1']:.2f}"),
        row(
            "ms/query, batch 64 (CPU)",
            lambda i, s: f"{s['ann_ms_batch64']:.3f} ({s['ann_cpu_ms_batch64']:.3f})",
        ),
        row(
            "top-1 agreement with exact",
            lambda i, s: f"{s['top1_agreement']:.4f}",
            f"≥ {t['agreement']}",
        ),
        row(
            "resident bytes per cell",
            lambda i, s: f"{s['resident_bytes_per_cell']:.1f}",
            f"≤ {t['bytes']:.0f}",
        ),
        row(
            "index + finder in memory (GiB)",
            lambda i, s: f"{s.get('index_memory_bytes', i['index_bytes']) / GIB:.3f}",
        ),
        row(
            "refine file on disk (GiB, page cache)",
            lambda i, s: f"{i.get('refine_file_bytes', 0) / GIB:.2f}",
        ),
        row(
            "build wall (CPU) min",
            lambda i, s: f"{i['build_s'] / 60:.1f} ({_minutes(i.get('build_cpu_s'))})",
        ),
        row("build peak anon RSS (GiB)", lambda i, s: f"{i['build_peak_anon_bytes'] / GIB:.2f}"),
        "",
    ]


def growth_table(runs: list[dict]) -> str:
    """One row per continent run (results.json dicts), smallest first: how costs grow."""
    lines = [
        "| cells | nlist | build min (CPU min) | index B/cell | compressed ms/q b1 "
        "(CPU) | b64 ms/q (CPU) | top-1 agreement | exact ms/q b1000 (CPU) | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: r["cells"]["cells"]):
        index, search = r["index"], r["search"]
        cpu_build = index.get("build_cpu_s")
        build = f"{index['build_s'] / 60:.1f}" + (
            f" ({cpu_build / 60:.1f})" if cpu_build is not None else ""
        )
        b1_cpu = search.get("ann_cpu_ms_batch1")
        b64_cpu = search.get("ann_cpu_ms_batch64")
        exact_cpu = search.get("exact_cpu_ms_batch_all")
        lines.append(
            f"| {r['cells']['cells']:,} | {index['params']['nlist']} | {build} | "
            f"{search['resident_bytes_per_cell']:.1f} | "
            f"{search['ann_ms_batch1_mean']:.2f} ({_num(b1_cpu, 2)}) | "
            f"{search['ann_ms_batch64']:.2f} ({_num(b64_cpu, 2)}) | "
            f"{search['top1_agreement']:.3f} | "
            f"{search['exact_ms_batch_all']:.1f} ({_num(exact_cpu, 1)}) | "
            f"{r['load_before'][0]:.0f}–{r['load_after'][0]:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _own(row: dict) -> str:
    """The index's own setting timed beside a sweep row ('—' in runs before that)."""
    if "own_ms_batch1_mean" not in row:
        return "—"
    return f"{row['own_ms_batch1_mean']:.2f} ({row['own_cpu_ms_batch1']:.2f})"


def _num(value: float | None, digits: int) -> str:
    """A number, or '—' where an older run did not record it."""
    return "—" if value is None else f"{value:.{digits}f}"
