"""VOS3000 CDRs read straight from its MySQL database (or a replica).

What it reads: the daily tables `e_cdr_YYYYMMDD` named by the local date of
the call (the time zone is `table_timezone`), from the day before the
watermark's up to today, plus tomorrow's within an hour of midnight (the
switch to a new table can lag, and a call lands by its start date). Where
none of those daily tables exists it reads the base table `e_cdr`.

How it reads:
- incrementally on `stoptime`: each pull selects `stoptime >= watermark -
  overlap`, so rows that land late (within `overlap`) are still caught; the
  store ignores the flownos it already has, so the overlap never counts a call
  twice;
- streaming: one server-side cursor per table (`SSCursor`), fetched
  `batch_rows` rows at a time, one Batch per chunk. Memory is bounded by one
  chunk whether the pull brings a hundred rows or millions;
- ordered by (stoptime, flowno). A chunk's last stoptime bounds only its own
  table, so only chunks of the last (newest) table advance the watermark; the
  final watermark (the highest stoptime read) is saved once every table is
  done. A crash between two batches re-reads, it never skips;
- by column name: the columns of each table are looked up once in
  information_schema, so tables without sipreasonheader / transactionid, or
  with callergatewayh323id / pdd / feeprefix, all work;
- read-only: the session is `SET SESSION TRANSACTION READ ONLY` on top of
  the read-only account it should be given; it never writes.

When the server cannot be read (down, restarted, connection killed, table
missing, permission refused) `pull` raises SourceError naming host, database,
table and what failed, then backs off: later pulls raise at once, without
touching the server, until the retry time (doubling from `retry_min` up to
`retry_max`). `health()` tells the core how long it has been failing.

Driver: mysqlclient (MySQLdb) when installed, else PyMySQL; `driver` forces
one. Why, measured with bench/bench_mysql_ingest.py (bench/mysql-notes.md):
the C driver fetches rows 4.7 times faster than pure-Python PyMySQL and makes
the whole MySQL-to-store path 1.4 times faster (40,000 against 28,000 CDRs/s
for 1M rows on a 2-core VM, where Store.ingest takes most of the rest).
PyMySQL stays supported: it installs anywhere, without a compiler or
libmysqlclient, and the same code runs on both.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

from ..cdr import CDRError
from . import Batch, SourceError, reject_unknown_options
from .incremental import (FUTURE_SLACK_MS, SourceHealth, check_zone, iso_ms, local_date,
                          parse_seconds, saved_stop)

from ..cdr import RowParser   # the fast positional parser; same CDRs, same CDRErrors

log = logging.getLogger("sentinel.sources.mysql")

MAX_PROBLEMS_LISTED = 20
TOMORROW_WITHIN_MS = 3600_000     # read tomorrow's table from 23:00 local time

# Columns cdr_from_record uses, in the order we select them. Only those a table
# has are selected; `flowno`, `stoptime` and `endreason` are required.
WANTED_COLUMNS = (
    "flowno", "starttime", "stoptime", "holdtime", "feetime", "callere164",
    "calleee164", "callergatewayid", "calleegatewayid", "customeraccount",
    "callerip", "calleeip", "callerpdd", "calleepdd", "pdd", "enddirection",
    "endreason", "sipreasonheader",
)
REQUIRED_COLUMNS = ("flowno", "stoptime", "endreason")

# -- drivers ---------------------------------------------------------------

class _Driver:
    """The few places where PyMySQL and mysqlclient differ."""

    def __init__(self, name: str):
        self.name = name
        if name == "mysqlclient":
            import MySQLdb
            import MySQLdb.cursors
            self.module = MySQLdb
            self.sscursor = MySQLdb.cursors.SSCursor
        else:
            import pymysql
            import pymysql.cursors
            self.module = pymysql
            self.sscursor = pymysql.cursors.SSCursor
        self.Error = self.module.MySQLError
        self.ProgrammingError = self.module.ProgrammingError

    def connect(self, *, host, port, user, password, database, connect_timeout,
                read_timeout, ssl):
        kw = dict(host=host, port=port, user=user, password=password, database=database,
                  connect_timeout=connect_timeout, read_timeout=read_timeout,
                  charset="utf8mb4", autocommit=True)
        if ssl:
            kw["ssl"] = ssl
        return self.module.connect(**kw)

    def ping(self, conn) -> None:
        if self.name == "mysqlclient":
            conn.ping()
        else:
            conn.ping(reconnect=False)


DRIVERS = ("mysqlclient", "pymysql")


def load_driver(choice: str = "auto") -> _Driver:
    names = DRIVERS if choice == "auto" else (choice,)
    errors = []
    for n in names:
        try:
            return _Driver(n)
        except ImportError as e:
            errors.append(f"{n}: {e}")
    raise ValueError("the mysql source needs a MySQL driver: pip install mysqlclient "
                     "(fastest; needs libmysqlclient) or pip install PyMySQL ("
                     + "; ".join(errors) + ")")


def _errno(e: BaseException) -> int | None:
    a = getattr(e, "args", ())
    return a[0] if a and isinstance(a[0], int) else None


def _explain(e: BaseException, user: str, password_env: str) -> str:
    """A driver error as a sentence a NOC engineer can act on."""
    code = _errno(e)
    text = str(e.args[1]) if len(getattr(e, "args", ())) > 1 else str(e)
    if code == 1045:
        return f"login refused for user {user!r} (check the user and ${password_env}): {text}"
    if code in (1044, 1142, 1143):
        return f"permission denied (the account needs SELECT on the CDR tables): {text}"
    if code == 1146:
        return f"table missing: {text}"
    if code in (2003, 2002, 2005):
        return f"cannot connect: {text}"
    if code in (2006, 2013, 2055, 1927, 1053, 4031):
        return f"connection lost: {text}"
    if code is not None:
        return f"MySQL error {code}: {text}"
    return f"{type(e).__name__}: {e}"


# -- table planning (pure) -------------------------------------------------

def daily_table_names(since_ms: int, now_ms: int, tz: ZoneInfo) -> list[str]:
    """The daily tables that may hold rows stopping at or after `since_ms`.

    From the day before `since_ms` (a call lands by its start date, so one
    stopping after midnight sits in yesterday's table) to today, and tomorrow
    near midnight.
    """
    first = min(local_date(since_ms, tz), local_date(now_ms, tz)) - timedelta(days=1)
    last = max(local_date(now_ms + TOMORROW_WITHIN_MS, tz), local_date(since_ms, tz))
    out = []
    d = first
    while d <= last:
        out.append(f"e_cdr_{d:%Y%m%d}")
        d += timedelta(days=1)
    return out


class _Failure(Exception):
    """Internal: the source cannot be read; message already explained."""


class MySQLSource:
    kind = "mysql"
    OPTIONS = {
        "host": "MySQL host of the VOS3000 database or a replica (default 127.0.0.1)",
        "port": "MySQL port (default 3306)",
        "user": "read-only MySQL account (required; SELECT on the CDR tables is enough)",
        "password_env": "environment variable holding the password (default SENTINEL_MYSQL_PASSWORD)",
        "database": "database name: vos3000 (default) or vos3000db",
        "ssl_ca": "CA certificate file: connect with TLS and verify the server",
        "ssl_cert": "client certificate file for TLS (with ssl_key)",
        "ssl_key": "client key file for TLS (with ssl_cert)",
        "table_timezone": "time zone whose dates name the e_cdr_YYYYMMDD tables (default UTC)",
        "overlap": "re-read this far behind the watermark to catch late rows (default \"2m\")",
        "backfill": "how far back the first pull reads (default \"1h\")",
        "batch_rows": "rows fetched and stored per batch (default 10000)",
        "connect_timeout": "give up connecting after this long (default \"10s\")",
        "read_timeout": "give up on a silent server after this long (default \"10m\")",
        "retry_min": "wait this long before the first retry after a failure (default \"30s\")",
        "retry_max": "longest wait between retries; the wait doubles up to it (default \"10m\")",
        "alert_after": "raise a source-health alert after failing this long (default \"5m\")",
        "driver": "auto (default: mysqlclient if installed, else pymysql), mysqlclient or pymysql",
    }

    def __init__(self, name: str, *, user: str, host: str = "127.0.0.1", port: int = 3306,
                 database: str = "vos3000", password_env: str = "SENTINEL_MYSQL_PASSWORD",
                 ssl: dict | None = None, table_timezone: str = "UTC", overlap_s: int = 120,
                 backfill_s: int = 3600, batch_rows: int = 10000, connect_timeout_s: int = 10,
                 read_timeout_s: int = 600, retry_min_s: int = 30, retry_max_s: int = 600,
                 alert_after_s: int = 300, driver: str = "auto"):
        self.name = name
        self.host, self.port, self.user = host, int(port), user
        self.database = database
        self.password_env = password_env
        self.ssl = ssl or None
        self.tz = ZoneInfo(table_timezone)
        self.table_timezone = table_timezone
        self.overlap_ms = overlap_s * 1000
        self.backfill_ms = backfill_s * 1000
        self.batch_rows = int(batch_rows)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.alert_after_s = alert_after_s
        self.driver = load_driver(driver)
        self.label = f"mysql source {name!r} ({user}@{host}:{self.port}, database {database})"
        self._health = SourceHealth(self.label, retry_min_s, retry_max_s)
        self._conn = None
        self._columns: dict[str, list[str]] = {}
        self._warned_read_only = False
        # (table, flowno) -> stoptime of bad rows already reported: the overlap
        # re-reads them, and a bad row should be reported once, not each cycle.
        self._reported_bad: dict[tuple[str, Any], int] = {}

    # -- config --------------------------------------------------------------
    @classmethod
    def from_options(cls, name: str, options: dict, base_dir=None) -> "MySQLSource":
        o = dict(options)
        reject_unknown_options(o, cls.OPTIONS)
        user = o.get("user")
        if not isinstance(user, str) or not user:
            raise ValueError("option 'user' is required: the read-only MySQL account "
                             "(its password goes in the environment, see password_env)")
        kw: dict[str, Any] = {"user": user}
        for key in ("host", "database", "password_env", "table_timezone", "driver"):
            if key in o:
                if not isinstance(o[key], str) or not o[key].strip():
                    raise ValueError(f"option {key!r}: expected a non-empty string")
                kw[key] = o[key].strip()
        if "password_env" in o and o["password_env"] not in os.environ:
            raise ValueError(f"option 'password_env': environment variable "
                             f"{o['password_env']!r} is not set")
        if "port" in o:
            if not isinstance(o["port"], int) or not 0 < o["port"] < 65536:
                raise ValueError(f"option 'port': expected a port number, got {o['port']!r}")
            kw["port"] = o["port"]
        if "batch_rows" in o:
            if not isinstance(o["batch_rows"], int) or not 100 <= o["batch_rows"] <= 1_000_000:
                raise ValueError("option 'batch_rows': expected a whole number from 100 "
                                 f"to 1000000, got {o['batch_rows']!r}")
            kw["batch_rows"] = o["batch_rows"]
        if "driver" in kw and kw["driver"] not in ("auto",) + DRIVERS:
            raise ValueError(f"option 'driver': expected auto, mysqlclient or pymysql, "
                             f"got {kw['driver']!r}")
        if "table_timezone" in kw:
            check_zone(kw["table_timezone"], "table_timezone")
        for key, default in (("overlap", "2m"), ("backfill", "1h"), ("connect_timeout", "10s"),
                             ("read_timeout", "10m"), ("retry_min", "30s"),
                             ("retry_max", "10m"), ("alert_after", "5m")):
            kw[f"{key}_s"] = parse_seconds(o.get(key, default), key)
        if kw["connect_timeout_s"] < 1 or kw["read_timeout_s"] < 1:
            raise ValueError("options 'connect_timeout' and 'read_timeout' must be at least 1s")
        ssl = {}
        for key in ("ssl_ca", "ssl_cert", "ssl_key"):
            if key in o:
                p = Path(str(o[key]))
                if base_dir is not None and not p.is_absolute():
                    p = Path(base_dir) / p
                if not p.is_file():
                    raise ValueError(f"option {key!r}: file {p} does not exist")
                ssl[key[4:]] = str(p)
        if ("cert" in ssl) != ("key" in ssl):
            raise ValueError("options 'ssl_cert' and 'ssl_key' go together")
        kw["ssl"] = ssl
        return cls(name, **kw)

    # -- connection ------------------------------------------------------------
    def _connection(self):
        """The open connection, re-opened if the server dropped it while idle."""
        if self._conn is not None:
            try:
                self.driver.ping(self._conn)
            except (self.driver.Error, OSError):
                log.info("%s: idle connection was dropped; reconnecting", self.label)
                self._discard()
        if self._conn is None:
            conn = self.driver.connect(
                host=self.host, port=self.port, user=self.user,
                password=os.environ.get(self.password_env, ""), database=self.database,
                connect_timeout=self.connect_timeout_s, read_timeout=self.read_timeout_s,
                ssl=self.ssl)
            try:
                cur = conn.cursor()
                try:
                    cur.execute("SET SESSION TRANSACTION READ ONLY")
                except self.driver.ProgrammingError as e:   # servers older than 5.6.5
                    if not self._warned_read_only:
                        log.warning("%s: server refused SET SESSION TRANSACTION READ ONLY (%s); "
                                    "relying on the read-only account", self.label, e)
                        self._warned_read_only = True
                # A slow consumer must not make the server drop a streaming result.
                cur.execute("SET SESSION net_write_timeout = %s", (max(60, self.read_timeout_s),))
                cur.close()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        self._discard()

    def connection_id(self) -> int | None:
        """The server's id of our connection (for KILL in tests), if connected."""
        return self._conn.thread_id() if self._conn is not None else None

    # -- health ------------------------------------------------------------------
    def health(self) -> dict:
        return self._health.as_dict()

    # -- planning ----------------------------------------------------------------
    def _existing_tables(self, conn, names: list[str]) -> set[str]:
        cur = conn.cursor()
        try:
            marks = ", ".join(["%s"] * len(names))
            cur.execute("SELECT table_name FROM information_schema.tables "
                        f"WHERE table_schema = %s AND table_name IN ({marks})",
                        [self.database, *names])
            return {r[0].decode() if isinstance(r[0], bytes) else r[0] for r in cur.fetchall()}
        finally:
            cur.close()

    def _table_columns(self, conn, table: str) -> list[str]:
        """The wanted columns `table` has, looked up once per table."""
        if table not in self._columns:
            cur = conn.cursor()
            try:
                cur.execute("SELECT column_name FROM information_schema.columns "
                            "WHERE table_schema = %s AND table_name = %s",
                            (self.database, table))
                have = {(r[0].decode() if isinstance(r[0], bytes) else r[0]).lower()
                        for r in cur.fetchall()}
            finally:
                cur.close()
            if not have:
                raise _Failure(f"table {table}: cannot read its columns (no SELECT "
                               f"privilege, or the table vanished)")
            missing = [c for c in REQUIRED_COLUMNS if c not in have]
            if missing:
                raise _Failure(f"table {table}: lacks required column(s) {', '.join(missing)}")
            self._columns[table] = [c for c in WANTED_COLUMNS if c in have]
        return self._columns[table]

    def plan(self, conn, since_ms: int, now_ms: int) -> list[tuple[str, list[str]]]:
        """(table, columns) to read, oldest first; e_cdr where no daily table exists."""
        wanted = daily_table_names(since_ms, now_ms, self.tz)
        existing = self._existing_tables(conn, wanted + ["e_cdr"])
        tables = [t for t in wanted if t in existing]
        if not tables:
            if "e_cdr" not in existing:
                raise _Failure(f"no CDR table: none of {', '.join(wanted)} exists, nor e_cdr "
                               f"(wrong database, or table_timezone {self.table_timezone!r}?)")
            tables = ["e_cdr"]
        # Forget the columns of tables we no longer read (one new table a day).
        self._columns = {t: c for t, c in self._columns.items() if t in tables}
        return [(t, self._table_columns(conn, t)) for t in tables]

    # -- pull ------------------------------------------------------------------
    def pull(self, store, now_ms: int) -> Iterator[Batch]:
        waiting = self._health.waiting(now_ms)
        if waiting:
            raise SourceError(waiting)
        prev_stop = saved_stop(store.watermark(self.name), now_ms, self.label)
        since = now_ms - self.backfill_ms if prev_stop is None else prev_stop - self.overlap_ms
        limit = now_ms + FUTURE_SLACK_MS
        self._reported_bad = {k: v for k, v in self._reported_bad.items() if v >= since}
        table = stream = None
        step = "connecting"
        rows_read = bad_total = 0
        try:
            conn = self._connection()
            step = "listing tables"
            plan = self.plan(conn, since, now_ms)
            # high: the watermark to save, a stoptime below which every row is
            # in the store; it never goes back. seen: the highest stoptime read.
            high = seen = prev_stop
            for i, (table, columns) in enumerate(plan):
                step = "reading"
                last_table = i == len(plan) - 1
                stream = self._stream(conn, table, columns, since, limit)
                for batch, chunk_stop, nbad in stream:
                    rows_read += len(batch.cdrs) + nbad
                    bad_total += nbad
                    if chunk_stop is not None:
                        seen = chunk_stop if seen is None else max(seen, chunk_stop)
                        if last_table:
                            # Every earlier table is done and this one is read up
                            # to chunk_stop: no row stopping before it is missing.
                            high = chunk_stop if high is None else max(high, chunk_stop)
                    batch.watermark = self._mark(high, table)
                    yield batch
            if seen is not None and seen != high:
                # All tables read: everything up to the highest stoptime is in.
                yield Batch(cdrs=[], watermark=self._mark(seen, table),
                            label=f"{self.name}: watermark {iso_ms(seen)}")
        except (self.driver.Error, OSError) as e:
            self._discard()
            raise self._fail(now_ms, step, table, _explain(e, self.user, self.password_env)) from None
        except _Failure as e:
            raise self._fail(now_ms, step, None, str(e)) from None
        except GeneratorExit:
            # The consumer stopped mid-stream: drop the connection rather than
            # draining what is left of a streaming result.
            if stream is not None:
                stream.close()
            self._discard()
            raise
        except BaseException as e:
            self._discard()
            self._health.failed(now_ms, f"{step}: {type(e).__name__}: {e}")
            raise
        self._health.succeeded(now_ms, f"ok: last pull read {rows_read} rows "
                                       f"({bad_total} bad) at {iso_ms(now_ms)}")

    def _fail(self, now_ms: int, step: str, table: str | None, error: str) -> SourceError:
        where = f"table {table}: " if table and table not in error else ""
        msg = self._health.failed(now_ms, f"{where}{step}: {error}")
        log.warning("%s", msg)
        return SourceError(msg)

    @staticmethod
    def _mark(stop_ms: int | None, table: str | None) -> dict | None:
        if stop_ms is None:
            return None
        return {"stop_ms": stop_ms, "table": table}

    def read_range(self, start_ms: int, end_ms: int) -> Iterator[Batch]:
        """Every row stopping in [start_ms, end_ms), table by table, without
        touching the watermark: what `sentinel backfill` hands each process.
        Bad rows are reported as in `pull`; a failure raises SourceError."""
        table = None
        try:
            conn = self._connection()
            for table, columns in self.plan(conn, start_ms, end_ms):
                for batch, _stop, _bad in self._stream(conn, table, columns, start_ms,
                                                      end_ms, until=end_ms):
                    yield batch
        except (self.driver.Error, OSError) as e:
            self._discard()
            where = f"table {table}: " if table else ""
            raise SourceError(f"{self.label}: {where}backfill: "
                              f"{_explain(e, self.user, self.password_env)}") from None

    def _stream(self, conn, table: str, columns: list[str], since: int,
                limit: int, until: int | None = None) -> Iterator[tuple[Batch, int | None, int]]:
        """(batch, stoptime reached, bad rows) per chunk of `table`.

        The stoptime reached is the chunk's last stoptime not after `limit`:
        rows are in stoptime order, so every row of the table stopping before
        it has been read. A garbage stoptime in the future never counts.
        """
        cols = ", ".join(f"`{c}`" for c in columns)
        bound = " AND stoptime < %s" if until is not None else ""
        sql = (f"SELECT {cols} FROM `{self.database}`.`{table}` "
               f"WHERE stoptime >= %s{bound} ORDER BY stoptime, flowno")
        keys = tuple(columns)
        stop_i = keys.index("stoptime")
        convert = RowParser(keys)
        reported = self._reported_bad
        cur = conn.cursor(self.driver.sscursor)
        finished = False
        try:
            cur.execute(sql, (since,) if until is None else (since, until))
            n = self.batch_rows
            while True:
                rows = cur.fetchmany(n)
                if not rows:
                    break
                cdrs, problems, bad = [], [], 0
                append = cdrs.append
                for row in rows:
                    try:
                        append(convert(row))
                    except CDRError as e:
                        key = (table, row[0])
                        if key in reported:
                            continue            # seen by an earlier, overlapping pull
                        stop = row[stop_i]
                        reported[key] = stop if isinstance(stop, int) else since
                        bad += 1
                        if len(problems) < MAX_PROBLEMS_LISTED:
                            problems.append(f"{self.name}: {table} flowno {row[0]}: {e}")
                if bad > len(problems):
                    problems.append(f"{self.name}: {table}: ... and {bad - len(problems)} "
                                    f"more bad rows in this chunk")
                last_stop = None
                for row in reversed(rows):
                    v = row[stop_i]
                    if isinstance(v, int) and v <= limit:
                        last_stop = v
                        break
                yield (Batch(cdrs=cdrs, problems=problems,
                             label=f"{table}: {len(cdrs)} rows, {bad} bad"), last_stop, bad)
            finished = True
        finally:
            if finished:
                cur.close()
            else:
                # The caller discards the connection: closing a streaming cursor
                # would first read every row left. Tell PyMySQL's result not to
                # (its close and __del__ would drain it from a closed socket).
                res = getattr(cur, "_result", None)
                if res is not None and hasattr(res, "unbuffered_active"):
                    res.unbuffered_active = False
