"""The embedded store: SQLite through sqlite-utils, in WAL mode.

What lives here and why:
- `cdr`: every call attempt, keyed by flowno, so reading the same rows twice
  (an overlapping pull, a re-dropped file) never counts a call twice.
- `rollup`: per-minute aggregates per dimension value and end reason. A window
  is a sum of a few rollup rows whatever the call volume, so evaluating the
  whole rule pack costs in proportion to the number of groups, not of calls.
  Rollups are recomputed from the raw rows for every minute a batch touches,
  which keeps them idempotent.
- `watermark`, `file_seen`: where each source stopped, saved in the same
  transaction as the rows it covers, so a restart neither skips nor re-reads.
- `alert`, `outbox`: alert state and the notifications it produced, written
  together so a crash never loses or doubles a message.

WAL lets evaluation read while ingest or pruning writes; pruning deletes in
small chunks so it never holds the write lock for long.
"""

from __future__ import annotations

import json
from bisect import bisect_left
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import sqlite_utils

from .cdr import CDR, PREFIX_DIGITS, SHORT_CALL_SECONDS, destination_prefix

# Dimension name -> column of `cdr` it groups by. "global" groups everything.
DIMENSIONS: dict[str, str | None] = {
    "global": None,
    "egress": "egress",
    "ingress": "ingress",
    "account": "account",
    "prefix": "prefix",
    "caller_ip": "caller_ip",
}

# Upper bounds (ms) of the PDD histogram buckets; the last bucket is open.
# p95 over a window is read from this histogram, as Prometheus does.
PDD_BUCKETS_MS = (1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 15000, 20000, 30000)
N_PDD_BUCKETS = len(PDD_BUCKETS_MS) + 1

_CDR_COLUMNS = (
    "flowno", "start_ms", "stop_ms", "minute", "talk_s", "billed_s", "caller",
    "callee", "ingress", "egress", "account", "prefix", "caller_ip", "callee_ip",
    "pdd_ms", "pdd_bucket", "end_direction", "end_reason", "q850", "answered",
    "source",
)

_ROLLUP_SUMS = (
    "calls", "answered", "talk_s", "short_calls", "pdd_n", "pdd_sum",
) + tuple(f"pdd_h{i}" for i in range(N_PDD_BUCKETS))


def pdd_bucket(pdd_ms: int | None) -> int | None:
    """Index of the histogram bucket whose upper bound is the first >= pdd_ms."""
    return bisect_left(PDD_BUCKETS_MS, pdd_ms) if pdd_ms else None


@dataclass
class IngestResult:
    received: int = 0
    new: int = 0
    duplicates: int = 0
    minutes_touched: int = 0


@dataclass
class RollupRow:
    """Sums for one (group, end reason) over a span of minutes."""
    group: str
    end_reason: int
    calls: int
    answered: int
    talk_s: int
    short_calls: int
    pdd_n: int
    pdd_sum: int
    pdd_hist: tuple[int, ...] = field(default_factory=tuple)


class Store:
    """All persistence. One instance per process; safe across threads.

    sqlite connections are used from the scheduler's job thread and the bot's
    threads, so we open with check_same_thread=False and serialise writes
    with a lock (SQLite allows one writer anyway).
    """

    def __init__(self, path: str | Path = ":memory:"):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30,
                               isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        if self.path != ":memory:":
            self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self._write_lock = threading.RLock()
        self._create_schema()
        self._migrate()

    # -- schema -------------------------------------------------------------
    def _create_schema(self) -> None:
        db = self.db
        if "cdr" not in db.table_names():
            db["cdr"].create({
                "flowno": int, "start_ms": int, "stop_ms": int, "minute": int,
                "talk_s": int, "billed_s": int, "caller": str, "callee": str,
                "ingress": str, "egress": str, "account": str, "prefix": str,
                "caller_ip": str, "callee_ip": str, "pdd_ms": int, "pdd_bucket": int,
                "end_direction": int, "end_reason": int, "q850": int, "answered": int,
                "source": str,
            }, pk="flowno")
            # Window queries and rollup recomputation go by minute: cost follows
            # the window, not the history.
            db["cdr"].create_index(["minute"], if_not_exists=True)
        if "rollup" not in db.table_names():
            cols = ", ".join(f"{c} INTEGER NOT NULL" for c in _ROLLUP_SUMS)
            db.execute(f"""
                CREATE TABLE rollup (
                    dim TEXT NOT NULL, minute INTEGER NOT NULL, grp TEXT NOT NULL,
                    end_reason INTEGER NOT NULL, {cols},
                    PRIMARY KEY (dim, minute, grp, end_reason)
                ) WITHOUT ROWID""")
        if "watermark" not in db.table_names():
            db["watermark"].create({"source": str, "value": str, "updated_ms": int},
                                   pk="source")
        if "file_seen" not in db.table_names():
            db["file_seen"].create({"source": str, "name": str, "size": int,
                                    "mtime_ns": int, "rows": int, "bad_rows": int,
                                    "read_ms": int}, pk=("source", "name", "size", "mtime_ns"))
        if "source_event" not in db.table_names():
            db["source_event"].create({"id": int, "source": str, "at_ms": int,
                                       "level": str, "message": str}, pk="id")
        if "alert" not in db.table_names():
            db["alert"].create({
                "rule_id": str, "grp": str, "dim": str, "state": str,
                "active_since_ms": int, "fired_ms": int, "resolved_ms": int,
                "clear_since_ms": int, "last_eval_ms": int, "value": float, "data": str,
                "notified": int, "last_notified_ms": int, "flapping": int,
                "transitions": str, "detail": str,
            }, pk=("rule_id", "grp"))
        if "outbox" not in db.table_names():
            # AUTOINCREMENT: an id is never handed out twice, even after pruning
            # empties the table, so Slack's record of a message stays unambiguous.
            db.execute("""
                CREATE TABLE outbox (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, created_ms INTEGER, kind TEXT,
                    rule_id TEXT, grp TEXT, payload TEXT, delivered_ms INTEGER,
                    attempts INTEGER, error TEXT, suppressed TEXT, gave_up_ms INTEGER)""")
            db["outbox"].create_index(["delivered_ms"], if_not_exists=True)
        if "silence" not in db.table_names():
            db["silence"].create({
                "id": int, "rule_id": str, "grp": str, "starts_ms": int, "ends_ms": int,
                "reason": str, "created_by": str, "created_ms": int, "removed_ms": int,
            }, pk="id")
        if "source_status" not in db.table_names():
            db["source_status"].create({
                "source": str, "ok": int, "failing_since_ms": int, "last_success_ms": int,
                "last_attempt_ms": int, "last_error": str, "alert_after_s": int,
            }, pk="source")

    @contextmanager
    def transaction(self):
        """One write transaction, serialised with every other writer of this
        store (for modules that keep tables of their own, like Slack's ledger)."""
        with self._write_lock:
            self.db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.db.conn
                self.db.conn.execute("COMMIT")
            except BaseException:
                self.db.conn.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        """Add the columns later versions introduced to stores made earlier."""
        wanted = {
            "alert": {"dim": str, "clear_since_ms": int, "data": str, "notified": int,
                      "last_notified_ms": int, "flapping": int, "transitions": str},
            "outbox": {"suppressed": str, "gave_up_ms": int},
        }
        for table, cols in wanted.items():
            have = set(self.db[table].columns_dict)
            for name, typ in cols.items():
                if name not in have:
                    self.db[table].add_column(name, typ)

    # -- ingest -------------------------------------------------------------
    def ingest(self, source: str, cdrs: Iterable[CDR], *, watermark: Any = None,
               file_mark: tuple[str, int, int, int, int] | None = None) -> IngestResult:
        """Store a batch in one transaction: rows, rollups, watermark, file mark.

        Rows whose flowno is already stored (or repeated in the batch) are
        skipped; only the new ones are inserted and folded into the rollups,
        so re-reading the same CDRs never counts a call twice. VOS3000 CDRs
        do not change once written, which is what makes adding to the rollups
        exact; `rebuild_rollups` recomputes them from the raw rows if ever in
        doubt. `file_mark` is (name, size, mtime_ns, rows, bad_rows).
        """
        rows = [_row(c, source) for c in cdrs]
        result = IngestResult(received=len(rows))
        conn = self.db.conn
        # The costly Python work happens before the write lock, on a read of
        # which rows look new; inside, the check is repeated and only a batch
        # that changed meanwhile (another writer) is summed again. Several
        # processes importing files thus overlap all but the SQLite writes.
        guess = self._new_rows(rows)
        guess_deltas = _rollup_deltas(guess)
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fresh = self._new_rows(rows)
                if fresh:
                    conn.executemany(_INSERT_CDR, fresh)
                    same = len(fresh) == len(guess) and all(
                        a[0] == b[0] for a, b in zip(fresh, guess))
                    conn.executemany(_UPSERT_ROLLUP, guess_deltas if same else _rollup_deltas(fresh))
                    result.minutes_touched = len({r[3] for r in fresh})
                result.new = len(fresh)
                result.duplicates = result.received - result.new
                now_ms = int(time.time() * 1000)
                if watermark is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO watermark (source, value, updated_ms) VALUES (?, ?, ?)",
                        (source, json.dumps(watermark), now_ms))
                if file_mark is not None:
                    name, size, mtime_ns, nrows, bad = file_mark
                    conn.execute(
                        "INSERT OR REPLACE INTO file_seen VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (source, name, size, mtime_ns, nrows, bad, now_ms))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return result

    def _new_rows(self, rows: list[tuple]) -> list[tuple]:
        """The rows whose flowno is neither stored nor earlier in the batch."""
        if not rows:
            return []
        conn = self.db.conn
        flownos = [r[0] for r in rows]
        lo, hi = min(flownos), max(flownos)
        existing: set[int] = set()
        if hi - lo < 4 * len(rows):
            # Dense flownos (the usual case: VOS numbers them in sequence):
            # one range scan of the primary key.
            existing.update(f for (f,) in conn.execute(
                "SELECT flowno FROM cdr WHERE flowno BETWEEN ? AND ?", (lo, hi)))
        else:
            for i in range(0, len(flownos), 900):
                chunk = flownos[i:i + 900]
                existing.update(f for (f,) in conn.execute(
                    f"SELECT flowno FROM cdr WHERE flowno IN ({','.join('?' * len(chunk))})",
                    chunk))
        fresh = []
        for r in rows:
            f = r[0]
            if f not in existing:
                existing.add(f)
                fresh.append(r)
        return fresh

    def rebuild_rollups(self, start_minute: int, end_minute: int) -> None:
        """Recompute the rollups of minutes [start, end] from the raw rows."""
        conn = self.db.conn
        hist = ", ".join(f"sum(pdd_bucket IS {i})" for i in range(N_PDD_BUCKETS))
        sums = (f"count(*), sum(answered), sum(talk_s), "
                f"sum(answered AND talk_s < {SHORT_CALL_SECONDS}), count(pdd_ms), "
                f"coalesce(sum(pdd_ms), 0), {hist}")
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM rollup WHERE minute BETWEEN ? AND ?",
                             (start_minute, end_minute))
                for dim, col in DIMENSIONS.items():
                    grp = col or "''"
                    skip_empty = f"AND {col} <> ''" if col else ""
                    conn.execute(
                        f"INSERT INTO rollup (dim, minute, grp, end_reason, {', '.join(_ROLLUP_SUMS)}) "
                        f"SELECT '{dim}', minute, {grp}, end_reason, {sums} FROM cdr "
                        f"WHERE minute BETWEEN ? AND ? {skip_empty} "
                        f"GROUP BY minute, {grp}, end_reason",
                        (start_minute, end_minute))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def rollup_rows(self, start_minute: int, end_minute: int) -> list[tuple]:
        """Raw rollup rows of minutes [start, end], sorted: for consistency checks."""
        return self.db.conn.execute(
            "SELECT * FROM rollup WHERE minute BETWEEN ? AND ? "
            "ORDER BY dim, minute, grp, end_reason", (start_minute, end_minute)).fetchall()

    # -- reads for metrics --------------------------------------------------
    def window_rollups(self, dim: str, start_minute: int, end_minute: int) -> list[RollupRow]:
        """Sums per (group, end reason) over minutes [start_minute, end_minute)."""
        if dim not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dim!r}")
        sums = ", ".join(f"sum({c})" for c in _ROLLUP_SUMS)
        cur = self.db.conn.execute(
            f"SELECT grp, end_reason, {sums} FROM rollup "
            f"WHERE dim = ? AND minute >= ? AND minute < ? GROUP BY grp, end_reason",
            (dim, start_minute, end_minute))
        return [RollupRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], tuple(r[8:]))
                for r in cur]

    def rollup_tuples(self, dim: str, first_minute: int, last_minute: int, *,
                      pdd_histogram: bool = True) -> Iterator[tuple]:
        """Raw rollup rows (minute, grp, end_reason, sums...) of minutes
        [first, last]: what a sliding window adds and takes back as it moves.
        Without `pdd_histogram` the twelve histogram columns are left out."""
        sums = _ROLLUP_SUMS if pdd_histogram else _ROLLUP_SUMS[:6]
        return self.db.conn.execute(
            f"SELECT minute, grp, end_reason, {', '.join(sums)} FROM rollup "
            f"WHERE dim = ? AND minute BETWEEN ? AND ?", (dim, first_minute, last_minute))

    def latest_minute(self) -> int | None:
        row = self.db.conn.execute("SELECT max(minute) FROM cdr").fetchone()
        return row[0]

    def earliest_minute(self) -> int | None:
        row = self.db.conn.execute("SELECT min(minute) FROM cdr").fetchone()
        return row[0]

    def count_cdrs(self) -> int:
        return self.db.conn.execute("SELECT count(*) FROM cdr").fetchone()[0]

    def cdrs_between(self, start_ms: int, end_ms: int) -> Iterator[sqlite3.Row]:
        cur = self.db.conn.execute(
            "SELECT * FROM cdr WHERE minute >= ? AND minute <= ? AND stop_ms >= ? AND stop_ms < ? "
            "ORDER BY stop_ms", (start_ms // 60000, end_ms // 60000, start_ms, end_ms))
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row))

    # -- source bookkeeping -------------------------------------------------
    def watermark(self, source: str) -> Any:
        row = self.db.conn.execute("SELECT value FROM watermark WHERE source = ?",
                                   (source,)).fetchone()
        return json.loads(row[0]) if row else None

    def watermarks(self) -> dict[str, tuple[Any, int]]:
        return {s: (json.loads(v), u) for s, v, u in
                self.db.conn.execute("SELECT source, value, updated_ms FROM watermark")}

    def file_already_read(self, source: str, name: str, size: int, mtime_ns: int) -> bool:
        return self.db.conn.execute(
            "SELECT 1 FROM file_seen WHERE source=? AND name=? AND size=? AND mtime_ns=?",
            (source, name, size, mtime_ns)).fetchone() is not None

    def record_source_event(self, source: str, level: str, message: str,
                            at_ms: int | None = None) -> None:
        at_ms = at_ms if at_ms is not None else int(time.time() * 1000)
        with self._write_lock:
            self.db.conn.execute(
                "INSERT INTO source_event (source, at_ms, level, message) VALUES (?, ?, ?, ?)",
                (source, at_ms, level, message))

    def source_events(self, source: str | None = None, limit: int = 50) -> list[dict]:
        sql = "SELECT source, at_ms, level, message FROM source_event"
        args: tuple = ()
        if source:
            sql += " WHERE source = ?"
            args = (source,)
        sql += " ORDER BY id DESC LIMIT ?"
        return [dict(zip(("source", "at_ms", "level", "message"), r))
                for r in self.db.conn.execute(sql, args + (limit,))]

    # -- retention ----------------------------------------------------------
    def prune(self, retention_days: float, now_ms: int, chunk: int = 20000) -> int:
        """Delete CDRs and rollups older than the retention, a chunk at a time.

        Each chunk is its own short transaction, so ingest and evaluation are
        never held up for more than one chunk's delete.
        """
        cutoff_minute = int((now_ms - retention_days * 86_400_000) // 60000)
        deleted = 0
        while True:
            with self._write_lock:
                cur = self.db.conn.execute(
                    "DELETE FROM cdr WHERE flowno IN (SELECT flowno FROM cdr WHERE minute < ? LIMIT ?)",
                    (cutoff_minute, chunk))
            deleted += cur.rowcount
            if cur.rowcount < chunk:
                break
        with self._write_lock:
            self.db.conn.execute("DELETE FROM rollup WHERE minute < ?", (cutoff_minute,))
            self.db.conn.execute("DELETE FROM source_event WHERE at_ms < ?",
                                 (cutoff_minute * 60000,))
            self.db.conn.execute(
                "DELETE FROM outbox WHERE delivered_ms IS NOT NULL AND delivered_ms < ?",
                (cutoff_minute * 60000,))
        return deleted

    # -- alerts and outbox --------------------------------------------------
    def alerts(self, rule_id: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM alert", ()
        if rule_id is not None:
            sql, args = sql + " WHERE rule_id = ?", (rule_id,)
        cur = self.db.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def save_alert_changes(self, alerts: Sequence[dict], notifications: Sequence[dict]) -> None:
        """Persist state changes and the notifications they cause atomically.

        A notification with `suppressed` set (silenced, inhibited, flapping) is
        recorded for the record and for `sentinel test`, but never delivered.
        """
        conn = self.db.conn
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for a in alerts:
                    cols = ", ".join(a)
                    conn.execute(f"INSERT OR REPLACE INTO alert ({cols}) VALUES "
                                 f"({', '.join(':' + c for c in a)})", a)
                for n in notifications:
                    conn.execute(
                        "INSERT INTO outbox (created_ms, kind, rule_id, grp, payload, attempts, "
                        "suppressed, delivered_ms) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                        (n["created_ms"], n["kind"], n["rule_id"], n["grp"],
                         json.dumps(n["payload"]), n.get("suppressed"),
                         n["created_ms"] if n.get("suppressed") else None))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def notifications(self, since_ms: int = 0) -> list[dict]:
        """Every notification recorded, delivered or suppressed, oldest first."""
        cur = self.db.conn.execute(
            "SELECT id, created_ms, kind, rule_id, grp, payload, delivered_ms, suppressed "
            "FROM outbox WHERE created_ms >= ? ORDER BY id", (since_ms,))
        names = [d[0] for d in cur.description]
        out = []
        for r in cur:
            d = dict(zip(names, r))
            d["payload"] = json.loads(d["payload"])
            out.append(d)
        return out

    # -- silences -----------------------------------------------------------
    def add_silence(self, rule_id: str, grp: str | None, starts_ms: int, ends_ms: int,
                    reason: str, created_by: str) -> int:
        with self._write_lock:
            cur = self.db.conn.execute(
                "INSERT INTO silence (rule_id, grp, starts_ms, ends_ms, reason, created_by, "
                "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rule_id, grp, starts_ms, ends_ms, reason, created_by, starts_ms))
            return cur.lastrowid

    def silences(self, active_at_ms: int | None = None) -> list[dict]:
        sql = "SELECT * FROM silence WHERE removed_ms IS NULL"
        args: tuple = ()
        if active_at_ms is not None:
            sql += " AND starts_ms <= ? AND ends_ms > ?"
            args = (active_at_ms, active_at_ms)
        cur = self.db.conn.execute(sql + " ORDER BY id", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def remove_silence(self, silence_id: int, at_ms: int) -> bool:
        with self._write_lock:
            cur = self.db.conn.execute(
                "UPDATE silence SET removed_ms = ? WHERE id = ? AND removed_ms IS NULL",
                (at_ms, silence_id))
        return cur.rowcount == 1

    # -- source health ------------------------------------------------------
    def record_pull(self, source: str, at_ms: int, error: str | None,
                    alert_after_s: int) -> None:
        """Remember whether a source's pull worked: the first failure of a run
        of failures starts the clock of its source-health alert."""
        with self._write_lock:
            row = self.db.conn.execute(
                "SELECT failing_since_ms, last_success_ms FROM source_status WHERE source = ?",
                (source,)).fetchone()
            since, last_ok = row if row else (None, None)
            if error is None:
                since, last_ok = None, at_ms
            elif since is None:
                since = at_ms
            self.db.conn.execute(
                "INSERT OR REPLACE INTO source_status VALUES (?, ?, ?, ?, ?, ?, ?)",
                (source, 1 if error is None else 0, since, last_ok, at_ms, error, alert_after_s))

    def source_status(self) -> list[dict]:
        cur = self.db.conn.execute("SELECT * FROM source_status ORDER BY source")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def pending_notifications(self, limit: int = 500) -> list[dict]:
        cur = self.db.conn.execute(
            "SELECT id, created_ms, kind, rule_id, grp, payload, attempts FROM outbox "
            "WHERE delivered_ms IS NULL AND suppressed IS NULL AND gave_up_ms IS NULL "
            "ORDER BY id LIMIT ?", (limit,))
        out = []
        for r in cur:
            d = dict(zip(("id", "created_ms", "kind", "rule_id", "grp", "payload", "attempts"), r))
            d["payload"] = json.loads(d["payload"])
            out.append(d)
        return out

    def mark_delivered(self, outbox_id: int, at_ms: int) -> None:
        with self._write_lock:
            self.db.conn.execute("UPDATE outbox SET delivered_ms = ?, error = NULL WHERE id = ?",
                                 (at_ms, outbox_id))

    def mark_failed(self, outbox_id: int, error: str, *, give_up_at_ms: int | None = None) -> None:
        """Count a failed delivery; `give_up_at_ms` for errors no retry can fix
        (channel_not_found, invalid_auth): the message stays on record, unsent."""
        with self._write_lock:
            self.db.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, error = ?, gave_up_ms = ? WHERE id = ?",
                (error, give_up_at_ms, outbox_id))

    def undeliverable(self, limit: int = 50) -> list[dict]:
        cur = self.db.conn.execute(
            "SELECT id, created_ms, kind, rule_id, grp, error, gave_up_ms FROM outbox "
            "WHERE gave_up_ms IS NOT NULL ORDER BY id DESC LIMIT ?", (limit,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def close(self) -> None:
        self.db.conn.close()


_INSERT_CDR = (f"INSERT INTO cdr ({', '.join(_CDR_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(_CDR_COLUMNS))})")
_UPSERT_ROLLUP = (
    f"INSERT INTO rollup (dim, minute, grp, end_reason, {', '.join(_ROLLUP_SUMS)}) "
    f"VALUES ({', '.join('?' * (4 + len(_ROLLUP_SUMS)))}) "
    f"ON CONFLICT (dim, minute, grp, end_reason) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _ROLLUP_SUMS))

# Position in a cdr row tuple of the column each non-global dimension groups by.
_DIM_INDEX = tuple((dim, _CDR_COLUMNS.index(col)) for dim, col in DIMENSIONS.items() if col)


def _row(c: CDR, source: str) -> tuple:
    return (c.flowno, c.start_ms, c.stop_ms, c.stop_ms // 60000, c.talk_s, c.billed_s,
            c.caller, c.callee, c.ingress, c.egress, c.account,
            destination_prefix(c.callee, PREFIX_DIGITS), c.caller_ip, c.callee_ip,
            c.pdd_ms, pdd_bucket(c.pdd_ms), c.end_direction, c.end_reason, c.q850,
            1 if c.talk_s > 0 or 200 <= c.end_reason <= 299 else 0, source)


def _rollup_deltas(rows: list[tuple]) -> list[tuple]:
    """Sum new cdr rows into rollup increments, one pass for every dimension.

    Slots: calls, answered, talk_s, short_calls, pdd_n, pdd_sum, then the
    PDD histogram. This is the hot loop of ingest, hence flat and unrolled:
    no "" group is made (a call that never reached a vendor has no egress).
    """
    acc: dict[tuple, list[int]] = {}
    get = acc.get
    width = 6 + N_PDD_BUCKETS
    (d1, i1), (d2, i2), (d3, i3), (d4, i4), (d5, i5) = _DIM_INDEX
    short_limit = SHORT_CALL_SECONDS
    for r in rows:
        minute, talk, pdd, bucket, reason, answered = r[3], r[4], r[14], r[15], r[17], r[19]
        short = 1 if answered and talk < short_limit else 0
        for k in (("global", minute, "", reason),
                  (d1, minute, r[i1], reason) if r[i1] else None,
                  (d2, minute, r[i2], reason) if r[i2] else None,
                  (d3, minute, r[i3], reason) if r[i3] else None,
                  (d4, minute, r[i4], reason) if r[i4] else None,
                  (d5, minute, r[i5], reason) if r[i5] else None):
            if k is None:
                continue
            a = get(k)
            if a is None:
                a = acc[k] = [0] * width
            a[0] += 1
            a[1] += answered
            a[2] += talk
            a[3] += short
            if pdd:
                a[4] += 1
                a[5] += pdd
                a[6 + bucket] += 1
    return [k + tuple(v) for k, v in acc.items()]
