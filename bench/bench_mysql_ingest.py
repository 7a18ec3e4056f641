"""MySQL-to-store ingest: CDRs per second and peak memory, per MySQL driver.

    python bench/bench_mysql_ingest.py [--rows N] [--batch-rows N] [--drivers mysqlclient,pymysql]

Creates a throwaway database on the MariaDB/MySQL server at 127.0.0.1:3306
(root, empty password; --host/--port/--user to change), fills one
VOS3000-shaped daily table `e_cdr_YYYYMMDD` (MyISAM, the real columns and
indexes) with N rows (LOAD DATA LOCAL INFILE, or multi-row INSERTs where the
server refuses it), then, for each driver, runs in a fresh child process
exactly what the daemon does: `MySQLSource.pull` into a `Store` on a temp file
(`store.ingest(name, batch.cdrs, watermark=batch.watermark)`). The child
reports its wall time and its peak RSS (ru_maxrss), so the memory figure is
that of the pull alone.

To show where the time goes, each driver is also run in two reduced modes:
`fetch` (server-side cursor + fetchmany only) and `convert` (the source's
pull with cdr_from_record, batches not stored). Store ingest time = full -
convert. A last child pulls only ~1% of the rows, to show that peak memory
does not grow with the size of the pull.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402

DAY = (2026, 11, 21)               # the benchmark's day; its table is e_cdr_20261121
TARGET_RATE = 50_000
TARGET_RSS_MB = 300


def day_ms(h: int, m: int = 0) -> int:
    from tests.vos_fixtures import utc_ms
    return utc_ms(*DAY, h, m)


# -- filling the table ---------------------------------------------------------

def _tsv_lines(n: int, columns: list[str], first: int, stop_from: int, stop_to: int,
               seed: int):
    """Rows as TSV lines, made in chunks (a million dicts would not fit in RAM)."""
    from tests.vos_fixtures import make_rows
    chunk = 20_000
    for k in range(0, n, chunk):
        m = min(chunk, n - k)
        # Each chunk covers its own slice of the day, keeping stoptimes in order of flowno.
        lo = stop_from + (stop_to - stop_from) * k // n
        hi = stop_from + (stop_to - stop_from) * (k + m) // n
        for row in make_rows(m, first_flowno=first + k, stop_from_ms=lo, stop_to_ms=hi,
                             seed=seed + k):
            yield "\t".join("\\N" if row.get(c) is None else str(row[c]) for c in columns) + "\n"


def fill_table(args, database: str, table: str) -> tuple[float, str]:
    from tests.vos_fixtures import create_cdr_table
    import pymysql
    conn = pymysql.connect(host=args.host, port=args.port, user=args.user,
                           password=os.environ.get("SENTINEL_MYSQL_PASSWORD", ""),
                           database=database, autocommit=True, local_infile=True)
    t0 = time.perf_counter()
    cols = create_cdr_table(conn, database, table)
    stop_from, stop_to = day_ms(0, 5), day_ms(22, 55)
    with conn.cursor() as cur:
        cur.execute(f"ALTER TABLE `{table}` DISABLE KEYS")
        method = "LOAD DATA LOCAL INFILE"
        with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as fh:
            for line in _tsv_lines(args.rows, cols, 1, stop_from, stop_to, 7):
                fh.write(line)
            path = fh.name
        try:
            cur.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` "
                        f"FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' "
                        f"({', '.join(f'`{c}`' for c in cols)})", (path,))
        except pymysql.err.MySQLError as e:
            method = f"multi-row INSERT (LOAD DATA refused: {e.args[-1]})"
            from tests.vos_fixtures import insert_rows, make_rows
            step = 20_000
            for k in range(0, args.rows, step):
                m = min(step, args.rows - k)
                lo = stop_from + (stop_to - stop_from) * k // args.rows
                hi = stop_from + (stop_to - stop_from) * (k + m) // args.rows
                insert_rows(conn, database, table, make_rows(
                    m, first_flowno=1 + k, stop_from_ms=lo, stop_to_ms=hi, seed=7 + k))
        finally:
            os.unlink(path)
        cur.execute(f"ALTER TABLE `{table}` ENABLE KEYS")
        cur.execute(f"SELECT count(*) FROM `{table}`")
        assert cur.fetchone()[0] == args.rows
    conn.close()
    return time.perf_counter() - t0, method


# -- the child: one measured pull ------------------------------------------------

def child(args) -> None:
    from sentinel.sources.mysql import MySQLSource
    from sentinel.store import Store
    now_ms = day_ms(23, 0)
    backfill = "1d" if args.fraction >= 1 else f"{max(1, int(22.8 * 60 * args.fraction))}m"
    src = MySQLSource.from_options("bench", {
        "user": args.user, "host": args.host, "port": args.port, "database": args.database,
        "driver": args.driver, "batch_rows": args.batch_rows, "backfill": backfill}, None)
    tmp = tempfile.mkdtemp(prefix="sentinel-mysql-bench-")
    store = Store(os.path.join(tmp, "bench.db"))
    rows = 0
    prof = None
    if args.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    if args.mode == "fetch":
        conn = src._connection()
        cur = conn.cursor(src.driver.sscursor)
        cols = ", ".join(f"`{c}`" for c in src.plan(conn, now_ms - 86_400_000, now_ms)[-1][1])
        cur.execute(f"SELECT {cols} FROM `{args.table}` WHERE stoptime >= %s "
                    f"ORDER BY stoptime, flowno", (0,))
        while True:
            chunk = cur.fetchmany(args.batch_rows)
            if not chunk:
                break
            rows += len(chunk)
        cur.close()
    else:
        for batch in src.pull(store, now_ms):
            rows += len(batch.cdrs)
            if args.mode == "full":
                store.ingest(src.name, batch.cdrs, watermark=batch.watermark)
        if args.mode == "full":
            assert store.count_cdrs() == rows, (store.count_cdrs(), rows)
    secs = time.perf_counter() - t0
    if prof is not None:
        import io
        import pstats
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        sys.stderr.write(out.getvalue())
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"rows": rows, "seconds": secs, "rate": rows / secs if secs else 0,
                      "rss_mb": rss_kb / 1024}))


def run_child(args, driver: str, mode: str, fraction: float = 1.0,
              profile: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", "--driver", driver, "--mode", mode,
           "--database", args.database, "--table", args.table, "--rows", str(args.rows),
           "--batch-rows", str(args.batch_rows), "--host", args.host, "--port", str(args.port),
           "--user", args.user, "--fraction", str(fraction)] + (["--profile"] if profile else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {driver}/{mode} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if profile:
        result["profile"] = out.stderr
    return result


def best_of(args, driver: str, mode: str) -> dict:
    """The fastest of --repeat runs (others on the machine only ever slow a run
    down), with the median rate and the highest peak RSS for the record."""
    runs = [run_child(args, driver, mode) for _ in range(args.repeat if mode == "full" else 1)]
    best = max(runs, key=lambda r: r["rate"])
    rates = sorted(r["rate"] for r in runs)
    return dict(best, median=rates[len(rates) // 2], runs=len(runs),
                rss_mb=max(r["rss_mb"] for r in runs))


def run_backfill(args, driver: str) -> dict:
    """MySQL to store through `sentinel.bulk.backfill`: one process per core,
    each ingesting a slice of the day into the same store file."""
    from sentinel.bulk import backfill
    from sentinel.config import SourceConfig
    from tests.vos_fixtures import utc_ms
    work = Path(tempfile.mkdtemp(prefix="sentinel-mysql-bench-"))
    try:
        sc = SourceConfig("vos", "mysql", {"host": args.host, "port": args.port, "user": args.user,
                                          "database": args.database, "driver": driver,
                                          "batch_rows": args.batch_rows})
        workers = os.cpu_count() or 2
        t = time.perf_counter()
        report = backfill(str(work / "store.db"), sc, utc_ms(*DAY), utc_ms(*DAY) + 86_400_000,
                          workers=workers)
        secs = time.perf_counter() - t
        return {"rows": report.new, "seconds": secs, "rate": report.new / secs,
                "workers": workers}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-rows", type=int, default=10_000)
    ap.add_argument("--drivers", default="mysqlclient,pymysql")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3306)
    ap.add_argument("--user", default="root")
    ap.add_argument("--repeat", type=int, default=3,
                    help="end-to-end runs per driver; the best is reported (default 3)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the fetch/convert runs")
    ap.add_argument("--profile", action="store_true",
                    help="also print a cProfile of one end-to-end run (first driver)")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database")
    # internal: the measured child
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--driver", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    ap.add_argument("--database", help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    ap.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from sentinel.sources.mysql import load_driver
    drivers = []
    for d in args.drivers.split(","):
        try:
            load_driver(d.strip())
            drivers.append(d.strip())
        except ValueError:
            print(f"(driver {d} is not installed: skipped)")
    if not drivers:
        raise SystemExit("no MySQL driver installed")
    import pymysql
    admin = pymysql.connect(host=args.host, port=args.port, user=args.user,
                            password=os.environ.get("SENTINEL_MYSQL_PASSWORD", ""),
                            autocommit=True)
    args.database = f"sentinel_bench_{os.getpid()}"
    args.table = "e_cdr_%04d%02d%02d" % DAY
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{args.database}` CHARACTER SET utf8 COLLATE utf8_bin")
        cur.execute("SELECT version()")
        server = cur.fetchone()[0]
    try:
        print(f"machine: {machine()}")
        print(f"server: MariaDB/MySQL {server}; Python {sys.version.split()[0]}")
        secs, method = fill_table(args, args.database, args.table)
        print(f"filled {args.table} with {args.rows:,} rows in {secs:.1f}s ({method})\n")
        results = []
        for d in drivers:
            modes = ["full"] if args.no_breakdown else ["fetch", "convert", "full"]
            r = {m: best_of(args, d, m) for m in modes}
            results.append((d, r))
        small = run_child(args, drivers[0], "full", fraction=0.01)

        print(f"{'driver':<12} {'fetch only':>12} {'fetch+convert':>14} {'full ingest':>12} "
              f"{'(median)':>10} {'full s':>7} {'peak RSS':>9}")
        for d, r in results:
            f = r.get("fetch", {}).get("rate")
            c = r.get("convert", {}).get("rate")
            full = r["full"]
            print(f"{d:<12} {f and f'{f:,.0f}/s' or '-':>12} {c and f'{c:,.0f}/s' or '-':>14} "
                  f"{full['rate']:>10,.0f}/s {full['median']:>8,.0f}/s {full['seconds']:>7.1f} "
                  f"{full['rss_mb']:>6.0f} MB")
        print(f"(full ingest: best of {args.repeat} runs, median beside it; "
              f"fetch and convert: one run each)")
        print(f"\nsmall pull ({small['rows']:,} rows, {drivers[0]}): peak RSS "
              f"{small['rss_mb']:.0f} MB (memory does not grow with the pull)")
        for d, r in results:
            if "convert" in r:
                conv = r["convert"]["seconds"]
                full = r["full"]["seconds"]
                fetch = r["fetch"]["seconds"]
                print(f"{d}: time split: driver fetch {fetch:.1f}s, cdr_from_record + batching "
                      f"{conv - fetch:.1f}s, Store.ingest {full - conv:.1f}s "
                      f"({100 * (full - conv) / full:.0f}% of {full:.1f}s)")
        if args.profile:
            prof = run_child(args, drivers[0], "full", profile=True)
            print(f"\ncProfile of one end-to-end run ({drivers[0]}, {prof['rate']:,.0f}/s "
                  f"under the profiler), top functions by own time:")
            lines = prof["profile"].splitlines()
            start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
            print("\n".join(ln for ln in lines[start:] if ln.strip()))
        bf = run_backfill(args, drivers[0])
        print(f"\n`sentinel backfill` ({drivers[0]}, {bf['workers']} processes, the day cut "
              f"into slices): {bf['rows']:,} CDRs in {bf['seconds']:.1f}s = {bf['rate']:,.0f} CDRs/s")
        best = max(results, key=lambda x: x[1]["full"]["rate"])
        ok_rate = max(best[1]["full"]["rate"], bf["rate"]) >= TARGET_RATE
        ok_rss = all(r["full"]["rss_mb"] < TARGET_RSS_MB for _, r in results)
        print(f"\ntarget >= {TARGET_RATE:,} CDRs/s: {'met' if ok_rate else 'NOT met'} "
              f"(one process, {best[0]}: {best[1]['full']['rate']:,.0f}/s; backfill: "
              f"{bf['rate']:,.0f}/s); peak memory < {TARGET_RSS_MB} MB: "
              f"{'met' if ok_rss else 'NOT met'}")
    finally:
        if not args.keep:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{args.database}`")
        admin.close()


if __name__ == "__main__":
    main()
