"""`sentinel run` against a VOS3000 database raises the same diagnoses as the
demo does for the same incidents: the demo's traffic is written into daily
e_cdr tables in a real MariaDB and read back by the MySQL source, minute by
minute on a simulated clock, through the whole pipeline."""

from __future__ import annotations

import io

import pytest

from sentinel.alerts import delivered
from sentinel.app import CycleReport, Sentinel
from sentinel.cdr import record_from_cdr
from sentinel.config import Config, SourceConfig
from sentinel.demo import DEMO_START, run_demo
from sentinel.sources.demo import DemoTraffic

from .vos_fixtures import (MARIADB_HOST, MARIADB_PORT, create_cdr_table, day_table,  # noqa: F401
                           insert_rows, mariadb, vos_db)

HOURS = 5


@pytest.mark.mariadb
def test_mysql_source_raises_the_demos_diagnoses(mariadb, vos_db, tmp_path):
    start = int(DEMO_START.timestamp() * 1000)
    end = start + HOURS * 3600_000
    traffic = DemoTraffic(start)
    rows = []
    for i, c in enumerate(traffic.calls_between(start, end)):
        r = record_from_cdr(c)
        r["id"] = i + 1                  # e_cdr.id is an int; flowno is the bigint key
        rows.append(r)
    table = day_table(start)
    create_cdr_table(mariadb.conn, vos_db, table)
    insert_rows(mariadb.conn, vos_db, table, rows)

    cfg = Config(store=str(tmp_path / "s.db"), sources=[SourceConfig(
        "vos", "mysql", {"host": MARIADB_HOST, "port": MARIADB_PORT, "user": "root",
                         "database": vos_db, "backfill": "20m"})])
    app = Sentinel(cfg, notifiers=[])
    firings = set()
    for t in range(start + 60000, end + 1, 60000):
        if t < start + 15 * 60000:                     # the demo's warm-up
            app.pull(t, CycleReport(t))
            continue
        report = app.cycle(t)
        assert not report.problems, report.problems
        firings |= {(n["rule_id"], n["grp"]) for n in delivered(report.notifications)
                    if n["kind"] == "firing"}
    assert app.store.count_cdrs() == len(rows)

    demo = run_demo(Config(), hours=HOURS, out=io.StringIO())
    expected = {(n["rule_id"], n["grp"]) for n in demo.firings}
    assert firings == expected
    assert len(expected) >= 6
