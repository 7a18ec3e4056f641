"""Benchmarks of the spine (issue: CDRs in, rules evaluated).

1. Ingest from VOS3000 export files into the store, in CDRs per second: the
   files source parsing headerless e_cdr CSV, and the store taking each file
   in one transaction (rows, rollups, file mark).
2. One evaluation of the whole default rule pack over a window holding
   1,000,000 CDRs, against the floor: one plain SQL GROUP BY over the same
   rows. Evaluation reads the per-minute rollups, so it costs in proportion to
   the number of groups, not of calls.

    python bench/bench_spine.py [--rows 1000000] [--minutes 10]

Targets (README): ingest >= 100,000 CDRs/s; evaluation <= 2 x the floor.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BENCH_START_MS, Timer, machine, write_export_files  # noqa: E402
from sentinel.bulk import import_files  # noqa: E402
from sentinel.config import default_rules_dir  # noqa: E402
from sentinel.engine import RuleEngine  # noqa: E402
from sentinel.evaluate import evaluate  # noqa: E402
from sentinel.rules import load_rules  # noqa: E402
from sentinel.sources.files import FilesSource  # noqa: E402
from sentinel.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--minutes", type=int, default=10,
                    help="the rows are spread over this many minutes (the window)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args) -> None:
    print(f"machine: {machine()}")
    with Timer() as t:
        n = write_export_files(work / "drop", args.rows, args.minutes, files=20)
    print(f"generated {n} CDRs over {args.minutes} minutes in 20 headerless e_cdr CSV files "
          f"({t.seconds:.1f} s)")

    store = Store(work / "bench.db")
    src = FilesSource("files", work / "drop", settle_seconds=0)
    with Timer() as t:
        stored = 0
        for batch in src.pull(store, 0):
            stored += store.ingest("files", batch.cdrs, file_mark=batch.file_mark).new
    ingest_rate = stored / t.seconds
    print(f"ingest files -> store: {stored} CDRs in {t.seconds:.2f} s = {ingest_rate:,.0f} CDRs/s")

    with Timer() as t:
        again = sum(store.ingest("files", b.cdrs).new
                    for b in FilesSource("again", work / "drop", settle_seconds=0).pull(store, 0))
    print(f"re-ingest of the same files: {again} new (idempotent), {t.seconds:.2f} s")

    bulk_db = work / "bulk.db"
    with Timer() as t:
        report = import_files(str(bulk_db), work / "drop", workers=2, settle_seconds=0)
    print(f"bulk import (`sentinel import`, 2 processes): {report.new} CDRs in {t.seconds:.2f} s "
          f"= {report.new / t.seconds:,.0f} CDRs/s")

    loaded = load_rules(default_rules_dir())
    engine = RuleEngine(loaded.rules)
    now_ms = BENCH_START_MS + args.minutes * 60000
    first = BENCH_START_MS // 60000
    window = [r for r in store.db.conn.execute(
        "SELECT count(*) FROM cdr WHERE minute >= ? AND minute < ?", (first, first + args.minutes))]
    in_window = window[0][0]
    evals, floors = [], []
    for _ in range(args.repeat):
        with Timer() as t:
            ev = evaluate(store, engine, now_ms)
        evals.append(t.seconds)
        with Timer() as t:
            store.db.conn.execute(
                "SELECT egress, count(*), sum(answered) FROM cdr "
                "WHERE minute >= ? AND minute < ? GROUP BY egress",
                (first, first + args.minutes)).fetchall()
        floors.append(t.seconds)
    ev_s, floor_s = statistics.median(evals), statistics.median(floors)
    groups = sum(len(g) for g in ev.observations.values())
    print(f"evaluation of {len(loaded.rules)} rules over a {args.minutes}-minute window of "
          f"{in_window:,} CDRs: {ev_s * 1000:.1f} ms (median of {args.repeat}; "
          f"{groups} rule x group observations)")
    print(f"floor, one SQL GROUP BY egress over the same rows: {floor_s * 1000:.1f} ms")
    print(f"evaluation / floor = {ev_s / floor_s:.2f} (target <= 2)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (RSS) of this process: {peak:.0f} MB")
    engine.close()


if __name__ == "__main__":
    main()
