"""Bulk loads, on every core: export files (`sentinel import`) and a period
of a database source (`sentinel backfill`).

The daemon reads dropped files one by one (`sources.files`), which is plenty
for live traffic. Loading weeks of exports for a backtest is another matter:
parsing is pure Python, so one process uses one core. Here several processes
each take a share of the files and ingest them into the same store, each file
in its own transaction with its file mark, exactly as the files source does:
SQLite (WAL) serialises only the writes, and everything else overlaps.

The result is the same store as reading the folder with the files source
(a test checks it); a file already read is skipped, whoever read it.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .sources.files import FilesSource
from .store import Store


@dataclass
class ImportReport:
    files: int = 0
    new: int = 0
    duplicates: int = 0
    bad_rows: int = 0
    problems: list[str] = field(default_factory=list)


def _import_share(args) -> ImportReport:
    store_path, source_name, folder, columns, names = args
    src = FilesSource(source_name, folder, columns=columns, settle_seconds=0)
    store = Store(store_path)
    report = ImportReport()
    try:
        for name in names:
            p = Path(folder) / name
            st = p.stat()
            if store.file_already_read(source_name, p.name, st.st_size, st.st_mtime_ns):
                continue
            batch = src.read(p)
            res = store.ingest(source_name, batch.cdrs, file_mark=batch.file_mark)
            report.files += 1
            report.new += res.new
            report.duplicates += res.duplicates
            report.bad_rows += batch.file_mark[4]
            report.problems += batch.problems
    finally:
        store.close()
    return report


def import_files(store_path: str, folder: str | Path, *, source_name: str = "files",
                 columns: Sequence[str] | None = None, workers: int = 2,
                 settle_seconds: float = 5.0) -> ImportReport:
    """Ingest every export file of `folder` not read yet, with `workers`
    processes. Files are dealt out largest first so the shares even out."""
    if store_path == ":memory:":
        raise ValueError("a bulk import needs a store in a file")
    Store(store_path).close()                 # create the schema once, up front
    store = Store(store_path)
    try:
        pending = FilesSource(source_name, folder, columns=columns,
                              settle_seconds=settle_seconds).pending_files(store)
    finally:
        store.close()
    pending.sort(key=lambda p: -p.stat().st_size)
    workers = max(1, min(workers, len(pending)))
    shares = [[p.name for p in pending[i::workers]] for i in range(workers)]
    jobs = [(store_path, source_name, str(folder), tuple(columns) if columns else None, names)
            for names in shares if names]
    total = ImportReport()
    if not jobs:
        return total
    if workers == 1:
        parts = [_import_share(jobs[0])]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            parts = list(pool.map(_import_share, jobs))
    for part in parts:
        total.files += part.files
        total.new += part.new
        total.duplicates += part.duplicates
        total.bad_rows += part.bad_rows
        total.problems += part.problems
    return total


# -- backfill of a database source ---------------------------------------------

def _backfill_slice(args) -> ImportReport:
    store_path, sc, start_ms, end_ms = args
    from .app import build_source
    src = build_source(sc)
    store = Store(store_path)
    report = ImportReport()
    try:
        for batch in src.read_range(start_ms, end_ms):
            res = store.ingest(sc.name, batch.cdrs)
            report.new += res.new
            report.duplicates += res.duplicates
            report.problems += batch.problems
    finally:
        store.close()
        close = getattr(src, "close", None)
        if close:
            close()
    return report


def backfill(store_path: str, sc, start_ms: int, end_ms: int, *, workers: int = 2) -> ImportReport:
    """Load every CDR stopping in [start_ms, end_ms) from a database source,
    the period cut into one slice per process. The source's watermark moves
    to `end_ms` (never back) only once every slice is in, so the daemon then
    goes on from there with nothing missed and nothing counted twice."""
    from .app import build_source
    if store_path == ":memory:":
        raise ValueError("a backfill needs a store in a file")
    if not hasattr(build_source(sc), "read_range"):
        raise ValueError(f"source {sc.name!r} ({sc.kind}) cannot be backfilled by period")
    Store(store_path).close()
    span = max(60000, (end_ms - start_ms) // max(1, workers))
    cuts = list(range(start_ms, end_ms, span)) + [end_ms]
    jobs = [(store_path, sc, a, b) for a, b in zip(cuts, cuts[1:]) if a < b]
    if len(jobs) == 1:
        parts = [_backfill_slice(jobs[0])]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
            parts = list(pool.map(_backfill_slice, jobs))
    total = ImportReport(files=0)
    for part in parts:
        total.new += part.new
        total.duplicates += part.duplicates
        total.problems += part.problems
    store = Store(store_path)
    try:
        wm = store.watermark(sc.name) or {}
        if (wm.get("stop_ms") or 0) < end_ms:
            store.ingest(sc.name, [], watermark={**wm, "stop_ms": end_ms})
    finally:
        store.close()
    return total
