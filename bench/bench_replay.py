"""Benchmark: replay a week of demo traffic, one evaluation a minute.

About 5 million CDRs (500 calls a minute with the demo's daily rhythm and its
incidents every day), ingested once into a store kept under bench/out/, then
the whole default rule pack replayed over the week: 10,080 evaluations.

    python bench/bench_replay.py [--days 7] [--cpm 500] [--fresh]

Target (README): under a minute on our 2-core machines. Evaluation cost must
follow the window, not the number of rules or the history: the replay slides
its windows (evaluate.SlidingStats), and groups that no rule could match are
never turned into facts (engine.candidate_gate).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from sentinel.config import default_rules_dir  # noqa: E402
from sentinel.replay import backtest, load_rule_list  # noqa: E402
from sentinel.sources.demo import DEFAULT_INCIDENTS, DemoTraffic, Incident  # noqa: E402
from sentinel.store import Store  # noqa: E402

WEEK_START_MS = 1_794_787_200_000 - 1_794_787_200_000 % 86_400_000   # a Monday, 00:00 UTC


def daily_incidents(days: int) -> tuple[Incident, ...]:
    """The demo's incidents, moved into the afternoon of every day."""
    out = []
    for d in range(days):
        for inc in DEFAULT_INCIDENTS:
            if inc.name == "source-silent" and d % 2:
                continue
            offset = d * 1440 + 12 * 60
            out.append(Incident(inc.name, inc.start_min + offset, inc.end_min + offset,
                                inc.target, inc.description))
    return tuple(out)


def build_store(path: Path, days: int, cpm: int) -> tuple[int, float]:
    store = Store(path)
    traffic = DemoTraffic(WEEK_START_MS, calls_per_minute=cpm, incidents=daily_incidents(days))
    t0 = time.perf_counter()
    n = 0
    for hour in range(days * 24):
        a = WEEK_START_MS + hour * 3600_000
        n += store.ingest("demo", list(traffic.calls_between(a, a + 3600_000))).new
        if hour % 12 == 0:
            print(f"\rgenerating and ingesting: day {hour // 24 + 1}/{days}, {n:,} CDRs",
                  end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    store.close()
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--cpm", type=int, default=660,
                    help="nominal calls a minute (the daily rhythm averages 0.75 of it: ~5M a week)")
    ap.add_argument("--fresh", action="store_true", help="rebuild the stored week")
    ap.add_argument("--workers", type=int, default=2, help="replay processes (one per core)")
    ap.add_argument("--check-serial", action="store_true",
                    help="also replay in one process and compare the episodes")
    args = ap.parse_args()
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    path = out / f"week-{args.days}d-{args.cpm}cpm.db"
    print(f"machine: {machine()}")
    if args.fresh or not path.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        n, secs = build_store(path, args.days, args.cpm)
        print(f"stored {n:,} CDRs in {secs:.0f} s (generation and ingest; not part of the replay)")
    store = Store(path)
    cdrs = store.count_cdrs()
    rules = load_rule_list(default_rules_dir())
    start = WEEK_START_MS + 60 * 60000            # an hour in, so windows and baselines are full
    end = WEEK_START_MS + args.days * 86_400_000
    evaluations = (end - start) // 60000 + 1
    t0 = time.perf_counter()
    summary = backtest(store, rules, start, end, step_s=60, workers=args.workers)
    secs = time.perf_counter() - t0
    if args.check_serial and args.workers > 1:
        t1 = time.perf_counter()
        serial = backtest(store, rules, start, end, step_s=60, workers=1)
        serial_secs = time.perf_counter() - t1
        same = all([(e.group, e.fired_ms, e.resolved_ms) for e in summary[r].episodes] ==
                   [(e.group, e.fired_ms, e.resolved_ms) for e in serial[r].episodes]
                   for r in serial)
        print(f"single process: {serial_secs:.1f} s = {serial_secs / evaluations * 1000:.2f} ms "
              f"per evaluation; parallel episodes identical to single pass: {same}")
    alerts = sum(len(s.episodes) for s in summary.values())
    print(f"replay of {args.days} days ({cdrs:,} CDRs, {len(rules)} rules, {args.workers} "
          f"process(es)): {evaluations:,} evaluations in {secs:.1f} s; {alerts} firing episodes")
    for rule_id, s in sorted(summary.items()):
        if s.episodes:
            print(f"  {rule_id:28} {len(s.episodes):4} episodes on {len(s.groups())} groups")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (RSS): {peak:.0f} MB; target: under 60 s")


if __name__ == "__main__":
    main()
