"""The MySQL source against a real MariaDB holding VOS3000-shaped tables.

Each test gets a database of its own (the `vos_db` fixture). Outages are made
with a TCP proxy the test controls, or by KILLing the source's connection:
the shared server itself is never stopped. The clock is the `now_ms` passed to
pull, so backoff needs no sleeping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sentinel.sources import SourceError
from sentinel.sources.mysql import MySQLSource, daily_table_names, load_driver
from sentinel.store import Store

from tests.vos_fixtures import (TcpProxy, admin_connect, create_cdr_table, day_table, drain,
                          free_port, insert_rows, make_rows, mariadb, store_flownos,
                          table_flownos, utc_ms, vos_db)

__all__ = ["mariadb", "vos_db"]        # fixtures used by the tests below

D = (2026, 11, 21)                     # the day most tests live on
NOON = utc_ms(*D, 12, 0)


def _installed(driver: str) -> bool:
    try:
        load_driver(driver)
        return True
    except ValueError:
        return False


DRIVERS = [pytest.param(d, marks=pytest.mark.skipif(not _installed(d), reason=f"{d} not installed"))
           for d in ("mysqlclient", "pymysql")]


def source(database: str, **opts) -> MySQLSource:
    options = {"user": "root", "database": database, "batch_rows": 500}
    options.update(opts)
    return MySQLSource.from_options("vos", options, None)


@pytest.fixture
def admin(mariadb):
    conn = admin_connect()
    yield conn
    conn.close()


def assert_exact(store, admin, db, *tables):
    """The store holds every flowno of the tables, each once."""
    got = store_flownos(store, "vos")
    assert len(got) == len(set(got))
    assert set(got) == table_flownos(admin, db, *tables)


# -- planning (no database needed) ------------------------------------------------

def test_daily_tables_yesterday_today_and_tomorrow_near_midnight():
    utc = ZoneInfo("UTC")
    assert daily_table_names(NOON - 120_000, NOON, utc) == ["e_cdr_20261120", "e_cdr_20261121"]
    late = utc_ms(*D, 23, 30)
    assert daily_table_names(late - 120_000, late, utc) == [
        "e_cdr_20261120", "e_cdr_20261121", "e_cdr_20261122"]
    # A watermark two days old: every day since, nothing skipped.
    assert daily_table_names(NOON - 2 * 86_400_000, NOON, utc) == [
        "e_cdr_20261118", "e_cdr_20261119", "e_cdr_20261120", "e_cdr_20261121"]


def test_daily_tables_follow_the_table_timezone():
    # 17:30 UTC is 01:30 next day in Shanghai.
    t = utc_ms(*D, 17, 30)
    assert daily_table_names(t - 60_000, t, ZoneInfo("Asia/Shanghai")) == [
        "e_cdr_20261121", "e_cdr_20261122"]
    assert daily_table_names(t - 60_000, t, ZoneInfo("UTC")) == [
        "e_cdr_20261120", "e_cdr_20261121"]


# -- options (no database needed) -----------------------------------------------------

def test_options_defaults_and_alert_after():
    src = MySQLSource.from_options("m", {"user": "ro"}, None)
    assert (src.host, src.port, src.database) == ("127.0.0.1", 3306, "vos3000")
    assert src.alert_after_s == 300 and src.overlap_ms == 120_000 and src.backfill_ms == 3600_000
    assert src.password_env == "SENTINEL_MYSQL_PASSWORD"
    src = MySQLSource.from_options("m", {"user": "ro", "alert_after": "10m",
                                         "database": "vos3000db"}, None)
    assert src.alert_after_s == 600 and src.database == "vos3000db"
    assert "alert_after" in MySQLSource.OPTIONS and "password" not in MySQLSource.OPTIONS
    h = src.health()
    assert h["ok"] is True and h["since_ms"] is None and h["last_success_ms"] is None


@pytest.mark.parametrize("options, words", [
    ({}, "'user' is required"),
    ({"user": "ro", "overlap": "2 minutes"}, "'overlap'"),
    ({"user": "ro", "backfill": 3600}, "'backfill'"),
    ({"user": "ro", "table_timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"user": "ro", "port": "3306"}, "'port'"),
    ({"user": "ro", "batch_rows": 5}, "'batch_rows'"),
    ({"user": "ro", "driver": "odbc"}, "'driver'"),
    ({"user": "ro", "password_env": "SENTINEL_NO_SUCH_VARIABLE_X"}, "is not set"),
    ({"user": "ro", "ssl_ca": "/nonexistent/ca.pem"}, "does not exist"),
    ({"user": "ro", "pasword": "x"}, "unknown option 'pasword'"),
])
def test_bad_options_are_clear_value_errors(options, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        MySQLSource.from_options("m", options, None)


def test_ssl_files_resolve_against_the_config_folder(tmp_path):
    for f in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / f).write_text("x")
    src = MySQLSource.from_options("m", {"user": "ro", "ssl_ca": "ca.pem", "ssl_cert": "cert.pem",
                                         "ssl_key": "key.pem"}, str(tmp_path))
    assert src.ssl == {"ca": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "cert.pem"),
                       "key": str(tmp_path / "key.pem")}
    with pytest.raises(ValueError, match="go together"):
        MySQLSource.from_options("m", {"user": "ro", "ssl_cert": "cert.pem"}, str(tmp_path))


def test_config_file_builds_the_source(tmp_path):
    from sentinel.app import build_source
    from sentinel.config import load_config
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text(textwrap.dedent("""
        [[source]]
        name = "vos-main"
        kind = "mysql"
        host = "10.0.0.5"
        user = "sentinel_ro"
        database = "vos3000db"
        table_timezone = "Asia/Shanghai"
        overlap = "3m"
        alert_after = "15m"
    """))
    src = build_source(load_config(cfg).sources[0])
    assert isinstance(src, MySQLSource) and src.name == "vos-main"
    assert src.alert_after_s == 900 and src.overlap_ms == 180_000
    assert src.table_timezone == "Asia/Shanghai"


# -- reading -----------------------------------------------------------------------------

@pytest.mark.mariadb
@pytest.mark.parametrize("driver", DRIVERS)
def test_first_pull_backfills_then_reads_only_new_rows(vos_db, admin, driver):
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    old = make_rows(50, first_flowno=1, stop_from_ms=NOON - 3 * 3600_000,
                    stop_to_ms=NOON - 2 * 3600_000)                 # before the 1h backfill
    recent = make_rows(2000, first_flowno=1000, stop_from_ms=NOON - 50 * 60_000,
                       stop_to_ms=NOON - 1000)
    insert_rows(admin, vos_db, t, old + recent)
    src, store = source(vos_db, driver=driver), Store()

    batches = list(src.pull(store, NOON))
    assert max(len(b.cdrs) for b in batches) <= 500 and len(batches) >= 4
    for b in batches:
        store.ingest(src.name, b.cdrs, watermark=b.watermark)
    assert sorted(store_flownos(store)) == [r["flowno"] for r in recent]
    assert store.watermark("vos")["stop_ms"] == recent[-1]["stoptime"]

    more = make_rows(300, first_flowno=5000, stop_from_ms=NOON, stop_to_ms=NOON + 55_000)
    insert_rows(admin, vos_db, t, more)
    received, new, problems = drain(src, store, NOON + 60_000)
    assert new == 300 and problems == []
    assert received < 300 + 100           # only the 2-minute overlap is read again
    assert store.count_cdrs() == 2300
    h = src.health()
    assert h["ok"] and h["last_success_ms"] == NOON + 60_000 and h["since_ms"] is None


@pytest.mark.mariadb
def test_pull_across_midnight_into_the_new_daily_table(vos_db, admin):
    today, tomorrow = "e_cdr_20261121", "e_cdr_20261122"
    create_cdr_table(admin, vos_db, today)
    create_cdr_table(admin, vos_db, tomorrow)
    before = utc_ms(*D, 23, 58)
    insert_rows(admin, vos_db, today, make_rows(
        300, first_flowno=1, stop_from_ms=before - 3600_000, stop_to_ms=before - 1000))
    # The switch to the new table came early: a row already in tomorrow's.
    insert_rows(admin, vos_db, tomorrow, make_rows(
        1, first_flowno=900, stop_from_ms=before - 30_000, stop_to_ms=before - 29_000))
    src, store = source(vos_db), Store()
    drain(src, store, before)
    assert store.count_cdrs() == 301

    after = utc_ms(2026, 11, 22, 0, 5)
    # A call that started before midnight lands in yesterday's table by its start date...
    crossing = make_rows(1, first_flowno=1001, stop_from_ms=utc_ms(2026, 11, 22, 0, 2),
                         stop_to_ms=utc_ms(2026, 11, 22, 0, 2, 1))
    crossing[0].update(starttime=utc_ms(*D, 23, 55), holdtime=420, endreason=200)
    insert_rows(admin, vos_db, today, crossing)
    # ...and the new day's calls in the new table.
    insert_rows(admin, vos_db, tomorrow, make_rows(
        50, first_flowno=2001, stop_from_ms=utc_ms(2026, 11, 22, 0, 0, 10),
        stop_to_ms=utc_ms(2026, 11, 22, 0, 4)))
    received, new, _ = drain(src, store, after)
    assert new == 51
    assert_exact(store, admin, vos_db, today, tomorrow)
    with admin.cursor() as cur:
        cur.execute(f"SELECT max(stoptime) FROM `{vos_db}`.`{tomorrow}`")
        assert store.watermark("vos")["stop_ms"] == cur.fetchone()[0]


@pytest.mark.mariadb
def test_late_row_within_the_overlap_is_caught(vos_db, admin):
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    rows = make_rows(500, first_flowno=1, stop_from_ms=NOON - 30 * 60_000, stop_to_ms=NOON - 10_000)
    insert_rows(admin, vos_db, t, rows)
    src, store = source(vos_db), Store()
    drain(src, store, NOON)
    mark = store.watermark("vos")["stop_ms"]
    assert mark == rows[-1]["stoptime"]

    late = make_rows(1, first_flowno=7001, stop_from_ms=mark - 60_000, stop_to_ms=mark - 59_000)
    too_late = make_rows(1, first_flowno=7002, stop_from_ms=mark - 5 * 60_000,
                         stop_to_ms=mark - 299_000)
    insert_rows(admin, vos_db, t, late + too_late)
    received, new, _ = drain(src, store, NOON + 60_000)
    flownos = set(store_flownos(store))
    assert 7001 in flownos and new == 1
    # The overlap (2m) is how late a row may land: one 5 minutes late is not read.
    assert 7002 not in flownos
    assert store.watermark("vos")["stop_ms"] == mark      # never moves back


@pytest.mark.mariadb
def test_duplicate_flowno_in_two_daily_tables_is_counted_once(vos_db, admin):
    a, b = "e_cdr_20261121", "e_cdr_20261122"
    create_cdr_table(admin, vos_db, a)
    create_cdr_table(admin, vos_db, b)
    now = utc_ms(2026, 11, 22, 0, 10)
    rows_a = make_rows(100, first_flowno=1, stop_from_ms=now - 40 * 60_000, stop_to_ms=now - 20 * 60_000)
    rows_b = make_rows(100, first_flowno=101, stop_from_ms=now - 9 * 60_000, stop_to_ms=now - 1000)
    twin = dict(rows_a[-1], stoptime=rows_a[-1]["stoptime"] + 60_000)   # same flowno, both tables
    insert_rows(admin, vos_db, a, rows_a)
    insert_rows(admin, vos_db, b, rows_b + [twin])
    src, store = source(vos_db), Store()
    received, new, _ = drain(src, store, now)
    assert received == 201 and new == 200
    assert_exact(store, admin, vos_db, a, b)


@pytest.mark.mariadb
def test_schema_variants_old_and_legacy_tables(vos_db, admin):
    yesterday, today = "e_cdr_20261120", "e_cdr_20261121"
    assert "sipreasonheader" not in create_cdr_table(admin, vos_db, yesterday, "old")
    cols = create_cdr_table(admin, vos_db, today, "legacy")
    assert {"callergatewayh323id", "pdd", "feeprefix"} <= set(cols) and "calleepdd" not in cols
    now = utc_ms(*D, 0, 30)
    old_rows = make_rows(40, first_flowno=1, stop_from_ms=now - 50 * 60_000, stop_to_ms=now - 31 * 60_000)
    legacy_rows = make_rows(40, first_flowno=101, stop_from_ms=now - 29 * 60_000, stop_to_ms=now - 1000)
    for r in legacy_rows:
        r.update(pdd=3210, feeprefix="44", callergatewayh323id="h323-gw")
    insert_rows(admin, vos_db, yesterday, old_rows)
    insert_rows(admin, vos_db, today, legacy_rows)
    src, store = source(vos_db), Store()
    received, new, problems = drain(src, store, now)
    assert (new, problems) == (80, [])
    pdd = dict(store.db.conn.execute("SELECT flowno, pdd_ms FROM cdr WHERE flowno > 100"))
    assert set(pdd.values()) == {3210}                   # read from the old `pdd` column


@pytest.mark.mariadb
def test_current_schema_reads_q850_from_sipreasonheader(vos_db, admin):
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    rows = make_rows(20, first_flowno=1, stop_from_ms=NOON - 60_000, stop_to_ms=NOON - 1000)
    rows[3].update(endreason=486, holdtime=0, sipreasonheader="Q.850;cause=17;text=\"busy\"")
    insert_rows(admin, vos_db, t, rows)
    src, store = source(vos_db), Store()
    drain(src, store, NOON)
    assert store.db.conn.execute("SELECT q850 FROM cdr WHERE flowno = 4").fetchone()[0] == 17


@pytest.mark.mariadb
def test_table_timezone_names_the_tables(vos_db, admin):
    now = utc_ms(*D, 17, 30)                        # 01:30 on the 22nd in Shanghai
    t = day_table(now, "Asia/Shanghai")
    assert t == "e_cdr_20261122"
    create_cdr_table(admin, vos_db, t)
    insert_rows(admin, vos_db, t, make_rows(
        100, first_flowno=1, stop_from_ms=now - 55 * 60_000, stop_to_ms=now - 1000))
    store = Store()
    src = source(vos_db, table_timezone="Asia/Shanghai")
    assert drain(src, store, now)[1] == 100
    # Read as UTC the same database has no table for the 20th/21st: a clear error.
    with pytest.raises(SourceError, match="no CDR table.*table_timezone 'UTC'"):
        drain(source(vos_db), Store(), now)


@pytest.mark.mariadb
def test_falls_back_to_e_cdr_where_no_daily_table_exists(vos_db, admin):
    create_cdr_table(admin, vos_db, "e_cdr")
    insert_rows(admin, vos_db, "e_cdr", make_rows(
        120, first_flowno=1, stop_from_ms=NOON - 40 * 60_000, stop_to_ms=NOON - 1000))
    src, store = source(vos_db), Store()
    assert drain(src, store, NOON)[1] == 120
    assert store.watermark("vos")["table"] == "e_cdr"
    # Once daily tables exist they are read, and e_cdr is left alone.
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    insert_rows(admin, vos_db, t, make_rows(
        10, first_flowno=500, stop_from_ms=NOON, stop_to_ms=NOON + 50_000))
    insert_rows(admin, vos_db, "e_cdr", make_rows(
        10, first_flowno=900, stop_from_ms=NOON, stop_to_ms=NOON + 50_000))
    drain(src, store, NOON + 60_000)
    flownos = set(store_flownos(store))
    assert set(range(500, 510)) <= flownos and not flownos & set(range(900, 910))


@pytest.mark.mariadb
def test_bad_rows_are_reported_once_and_skipped(vos_db, admin):
    t = day_table(NOON)
    # Numeric columns as text, as some broken imports leave them.
    create_cdr_table(admin, vos_db, t, text_numbers=("holdtime", "endreason"))
    rows = make_rows(60, first_flowno=1, stop_from_ms=NOON - 10 * 60_000, stop_to_ms=NOON - 1000)
    rows[10]["endreason"] = None                                   # NULL where a number belongs
    rows[11].update(holdtime=-5)                                   # negative talk time
    rows[12]["endreason"] = "abc"                                  # garbage in a numeric field
    rows[13].update(starttime=rows[13]["stoptime"] + 5000)         # stop before start
    rows[14]["holdtime"] = "12x"
    insert_rows(admin, vos_db, t, rows)
    src, store = source(vos_db), Store()
    received, new, problems = drain(src, store, NOON)
    assert (received, new) == (55, 55)
    assert len(problems) == 5
    expected = {11: "'endreason': is missing", 12: "talk time is negative",
                13: "'endreason': is not a number", 14: "is before starttime",
                15: "'holdtime': is not a number"}
    for flowno, words in expected.items():
        assert any(f"{t} flowno {flowno}:" in p and words in p for p in problems), (flowno, problems)
    assert store.watermark("vos")["stop_ms"] == rows[-1]["stoptime"]
    assert src.health()["ok"]
    # The overlap reads them again; they are not reported again.
    assert drain(src, store, NOON + 60_000)[2] == []


# -- never writes ------------------------------------------------------------------------

@pytest.mark.mariadb
def test_works_with_a_select_only_user_and_never_writes(mariadb, vos_db, admin, monkeypatch):
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    insert_rows(admin, vos_db, t, make_rows(
        200, first_flowno=1, stop_from_ms=NOON - 20 * 60_000, stop_to_ms=NOON - 1000))
    user = mariadb.create_read_only_user(vos_db, "ro-secret")
    monkeypatch.setenv("SENTINEL_TEST_RO_PASSWORD", "ro-secret")
    src = source(vos_db, user=user, password_env="SENTINEL_TEST_RO_PASSWORD")
    store = Store()
    assert drain(src, store, NOON)[1] == 200
    assert_exact(store, admin, vos_db, t)
    # Even an account that could write gets a read-only session.
    root_src = source(vos_db)
    drain(root_src, Store(), NOON)
    cur = root_src._conn.cursor()
    with pytest.raises(root_src.driver.Error) as e:
        cur.execute(f"INSERT INTO `{vos_db}`.`{t}` (id, flowno) VALUES (1, 999999)")
    assert e.value.args[0] == 1792               # cannot execute in a READ ONLY transaction
    assert 999999 not in table_flownos(admin, vos_db, t)


@pytest.mark.mariadb
def test_permission_error_then_grant_recovers(mariadb, vos_db, admin, monkeypatch):
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    insert_rows(admin, vos_db, t, make_rows(
        50, first_flowno=1, stop_from_ms=NOON - 20 * 60_000, stop_to_ms=NOON - 1000))
    user = mariadb.create_read_only_user(mariadb.database, "pw")     # SELECT on another db only
    monkeypatch.setenv("SENTINEL_TEST_PW", "pw")
    src, store = source(vos_db, user=user, password_env="SENTINEL_TEST_PW"), Store()
    with pytest.raises(SourceError) as e:
        drain(src, store, NOON)
    assert "permission denied" in str(e.value) and vos_db in str(e.value)
    assert "127.0.0.1:3306" in str(e.value)
    assert not src.health()["ok"]
    admin.cursor().execute(f"GRANT SELECT ON `{vos_db}`.* TO '{user}'@'%'")
    assert drain(src, store, NOON + 30_000)[1] == 50
    assert src.health()["ok"] and src.health()["since_ms"] is None


@pytest.mark.mariadb
def test_wrong_password_says_login_refused(mariadb, vos_db, monkeypatch):
    user = mariadb.create_read_only_user(vos_db, "right")
    monkeypatch.setenv("SENTINEL_TEST_PW", "wrong")
    src = source(vos_db, user=user, password_env="SENTINEL_TEST_PW")
    with pytest.raises(SourceError, match=r"login refused for user .*\$SENTINEL_TEST_PW"):
        drain(src, Store(), NOON)


@pytest.mark.mariadb
def test_missing_tables_are_a_source_error(vos_db):
    src = source(vos_db)
    with pytest.raises(SourceError) as e:
        drain(src, Store(), NOON)
    msg = str(e.value)
    assert "no CDR table" in msg and vos_db in msg and "e_cdr_20261121" in msg
    assert "failing since 2026-11-21T12:00:00Z" in msg
    h = src.health()
    assert h["ok"] is False and h["since_ms"] == NOON and "no CDR table" in h["message"]


# -- outages, backoff, recovery ------------------------------------------------------

def test_backoff_doubles_up_to_the_cap_without_touching_the_server():
    # A "server" that accepts TCP and hangs up: every attempt is counted.
    dead = TcpProxy("127.0.0.1", free_port()).start()
    try:
        src = source("vos3000", port=dead.port, retry_min="30s", retry_max="2m",
                     connect_timeout="2s")
        store, t0 = Store(), NOON
        schedule = [                  # (seconds after t0, attempts to the server so far)
            (0, 1), (10, 1), (29, 1), (30, 2), (60, 2), (89, 2), (90, 3), (209, 3),
            (210, 4), (329, 4), (330, 5)]
        for dt, attempts in schedule:
            with pytest.raises(SourceError) as e:
                drain(src, store, t0 + dt * 1000)
            assert "failing since 2026-11-21T12:00:00Z" in str(e.value)
            assert dead.attempts == attempts, dt
        h = src.health()
        assert h["ok"] is False and h["since_ms"] == t0 and h["failures"] == 5
        assert h["retry_at_ms"] == t0 + 450_000           # capped at 2m
    finally:
        dead.stop()


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", DRIVERS)
def test_server_stopped_and_started_nothing_lost_nothing_doubled(vos_db, admin, driver):
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    insert_rows(admin, vos_db, t, make_rows(
        400, first_flowno=1, stop_from_ms=NOON - 20 * 60_000, stop_to_ms=NOON - 60_000))
    proxy = TcpProxy().start()
    try:
        src = source(vos_db, port=proxy.port, driver=driver, retry_min="30s", retry_max="5m")
        store = Store()
        assert drain(src, store, NOON)[1] == 400

        proxy.stop()                                  # the server goes away
        insert_rows(admin, vos_db, t, make_rows(
            100, first_flowno=1000, stop_from_ms=NOON - 50_000, stop_to_ms=NOON + 50_000))
        with pytest.raises(SourceError) as e:
            drain(src, store, NOON + 60_000)
        assert f"127.0.0.1:{proxy.port}" in str(e.value) and vos_db in str(e.value)
        assert "failing since 2026-11-21T12:01:00Z" in str(e.value)
        h = src.health()
        assert (h["ok"], h["since_ms"], h["last_success_ms"]) == (False, NOON + 60_000, NOON)

        with pytest.raises(SourceError, match="next retry at 2026-11-21T12:01:30Z"):
            drain(src, store, NOON + 70_000)          # waiting: the server is not tried
        with pytest.raises(SourceError, match="2 failed attempts"):
            drain(src, store, NOON + 90_000)          # retried, still down: wait doubles

        proxy.start()                                  # the server is back
        insert_rows(admin, vos_db, t, make_rows(
            100, first_flowno=2000, stop_from_ms=NOON + 60_000, stop_to_ms=NOON + 140_000))
        with pytest.raises(SourceError, match="failing since 2026-11-21T12:01:00Z"):
            drain(src, store, NOON + 120_000)         # not yet due (12:02:30)
        received, new, _ = drain(src, store, NOON + 150_000)
        assert new == 200
        h = src.health()
        assert h["ok"] and h["since_ms"] is None and h["last_success_ms"] == NOON + 150_000
        assert_exact(store, admin, vos_db, t)
    finally:
        proxy.stop()


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", DRIVERS)
def test_connection_cut_mid_stream_resumes_from_the_watermark(vos_db, admin, driver):
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    insert_rows(admin, vos_db, t, make_rows(
        2500, first_flowno=1, stop_from_ms=NOON - 55 * 60_000, stop_to_ms=NOON - 1000))
    proxy = TcpProxy().start()
    try:
        src, store = source(vos_db, port=proxy.port, batch_rows=500, driver=driver), Store()
        proxy.cut_after(150_000)          # the server restarts in the middle of the result
        batches = 0
        with pytest.raises(SourceError, match="reading: connection lost"):
            for b in src.pull(store, NOON):
                store.ingest(src.name, b.cdrs, watermark=b.watermark)
                batches += 1
        assert batches >= 1 and 0 < store.count_cdrs() < 2500
        assert not src.health()["ok"]
        # Saved with the batches: a watermark that skips nothing not yet stored.
        mark = store.watermark("vos")["stop_ms"]
        assert mark <= max(c for (c,) in store.db.conn.execute("SELECT stop_ms FROM cdr"))
        drain(src, store, NOON + 30_000)
        assert_exact(store, admin, vos_db, t)
        assert src.health()["ok"]
    finally:
        proxy.stop()


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", DRIVERS)
def test_killed_idle_connection_reconnects_without_an_error(vos_db, admin, driver):
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    insert_rows(admin, vos_db, t, make_rows(
        100, first_flowno=1, stop_from_ms=NOON - 20 * 60_000, stop_to_ms=NOON - 1000))
    src, store = source(vos_db, driver=driver), Store()
    drain(src, store, NOON)
    first = src.connection_id()
    admin.cursor().execute(f"KILL {first}")
    insert_rows(admin, vos_db, t, make_rows(
        50, first_flowno=500, stop_from_ms=NOON, stop_to_ms=NOON + 50_000))
    assert drain(src, store, NOON + 60_000)[1] == 50
    assert src.connection_id() != first and src.health()["ok"]
    assert_exact(store, admin, vos_db, t)


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", DRIVERS)
def test_consumer_stopping_early_drops_the_stream_cleanly(vos_db, admin, driver):
    t = day_table(NOON)
    create_cdr_table(admin, vos_db, t)
    insert_rows(admin, vos_db, t, make_rows(
        1500, first_flowno=1, stop_from_ms=NOON - 50 * 60_000, stop_to_ms=NOON - 1000))
    src, store = source(vos_db, driver=driver), Store()
    gen = src.pull(store, NOON)
    b = next(gen)
    store.ingest(src.name, b.cdrs, watermark=b.watermark)
    gen.close()                          # e.g. the daemon is shutting down
    assert src.connection_id() is None   # dropped, not drained
    drain(src, store, NOON + 60_000)
    assert_exact(store, admin, vos_db, t)


# -- the fixture itself --------------------------------------------------------------

@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])
def test_unreachable_mariadb_skips_locally_but_fails_in_ci(tmp_path, ci, outcome):
    (tmp_path / "test_probe.py").write_text(
        "from tests.vos_fixtures import mariadb\n\n"
        "def test_needs_db(mariadb):\n    pass\n")
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, CI=ci, SENTINEL_TEST_MARIADB_PORT=str(free_port()),
               PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path / "test_probe.py")], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=60)
    assert outcome in out.stdout, out.stdout + out.stderr
    assert (out.returncode != 0) == bool(ci)      # red in CI, green (skipped) locally
    if ci:
        assert "CI=true: the MariaDB tests must run" in out.stdout
