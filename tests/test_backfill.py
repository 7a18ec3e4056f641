"""`sentinel backfill`: a period of a VOS3000 database loaded by several
processes equals a plain pull, and the daemon goes on from where it ended."""

from __future__ import annotations

import pytest

from sentinel.bulk import backfill
from sentinel.config import SourceConfig
from sentinel.sources.mysql import MySQLSource
from sentinel.store import Store

from .vos_fixtures import (MARIADB_HOST, MARIADB_PORT, create_cdr_table, day_table,  # noqa: F401
                           drain, insert_rows, make_rows, mariadb, store_flownos, utc_ms, vos_db)


@pytest.mark.mariadb
def test_backfill_equals_a_pull_and_the_daemon_resumes_after_it(mariadb, vos_db, tmp_path):
    day = utc_ms(2026, 11, 20)
    rows = make_rows(3000, first_flowno=1, stop_from_ms=day, stop_to_ms=day + 86_400_000)
    table = day_table(day)
    create_cdr_table(mariadb.conn, vos_db, table)
    insert_rows(mariadb.conn, vos_db, table, rows)
    opts = {"host": MARIADB_HOST, "port": MARIADB_PORT, "user": "root", "database": vos_db,
            "backfill": "2d"}
    sc = SourceConfig("vos", "mysql", opts)

    report = backfill(str(tmp_path / "b.db"), sc, day, day + 86_400_000, workers=2)
    plain = Store(tmp_path / "p.db")
    drain(MySQLSource.from_options("vos", opts), plain, day + 86_400_000 + 60000)
    filled = Store(tmp_path / "b.db")
    assert report.new == 3000 - sum(1 for r in rows if r["endreason"] is None)
    assert sorted(store_flownos(filled)) == sorted(store_flownos(plain))
    m = day // 60000
    assert filled.rollup_rows(m, m + 1440) == plain.rollup_rows(m, m + 1440)
    assert filled.watermark("vos")["stop_ms"] == day + 86_400_000

    # New rows after the period: the daemon's next pull takes only those.
    later = make_rows(50, first_flowno=10_000, stop_from_ms=day + 86_400_000,
                      stop_to_ms=day + 86_400_000 + 600_000, seed=2)
    create_cdr_table(mariadb.conn, vos_db, day_table(day + 86_400_000))
    insert_rows(mariadb.conn, vos_db, day_table(day + 86_400_000), later)
    _, new, _ = drain(MySQLSource.from_options("vos", opts), filled, day + 86_400_000 + 900_000)
    assert new == 50
