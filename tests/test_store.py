"""sentinel.store: idempotent ingest, rollups that equal a recomputation from
the raw rows, atomic batches with their watermark, WAL, indexed window reads
and retention. Real SQLite files in tmp_path."""

from __future__ import annotations

import random
import sqlite3

import pytest

from sentinel.sources.demo import DemoTraffic
from sentinel.store import N_PDD_BUCKETS, RollupRow, Store, pdd_bucket

from .helpers import BASE_MINUTE, BASE_MS, at, make_cdr

DAY_MS = 86_400_000


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "sentinel.db")
    yield s
    s.close()


def all_rollups(s: Store) -> list[tuple]:
    return s.rollup_rows(-1, 2**40)


def hist(**buckets) -> tuple[int, ...]:
    """PDD histogram with counts in the named buckets, e.g. hist(h0=1, h2=3)."""
    h = [0] * N_PDD_BUCKETS
    for k, v in buckets.items():
        h[int(k[1:])] = v
    return tuple(h)


def varied_batch(n: int, *, seed: int = 1, flownos=None) -> list:
    r = random.Random(seed)
    out = []
    for i in range(n):
        reason = r.choice([200, 200, 200, 486, 487, 503, 408, 8, -9])
        talk = r.choice([0, 3, 45, 300]) if reason == 200 else 0
        extra = {}
        if reason in (8, -9):
            extra = dict(egress="", callee_ip="", pdd_ms=None)
        if reason == -9:
            extra.update(ingress="", account="")
        fields = dict(
            stop_ms=at(r.randrange(6), r.uniform(0, 59.9)), end_reason=reason, talk_s=talk,
            egress=r.choice(["VEND-A", "VEND-B", "VEND-C"]),
            callee=r.choice(["4420794600001", "+4477001", "0088017123"]),
            pdd_ms=r.choice([None, 800, 2500, 7000, 45000]))
        if flownos:
            fields["flowno"] = flownos[i]
        fields.update(extra)
        out.append(make_cdr(**fields))
    return out


# -- exact rollups --------------------------------------------------------------

def test_rollups_hold_the_exact_sums(store):
    calls = [
        make_cdr(stop_ms=at(0, 5), egress="VEND-A", end_reason=200, talk_s=60, pdd_ms=2500),
        make_cdr(stop_ms=at(0, 50), egress="VEND-A", end_reason=200, talk_s=3, pdd_ms=1000),
        make_cdr(stop_ms=at(0, 59), egress="VEND-B", end_reason=486, pdd_ms=4000),
        make_cdr(stop_ms=at(1, 0), egress="VEND-B", end_reason=486, pdd_ms=None),
    ]
    res = store.ingest("t", calls)
    assert (res.received, res.new, res.duplicates, res.minutes_touched) == (4, 4, 0, 2)
    got = {(r.group, r.end_reason): r for r in store.window_rollups("egress", BASE_MINUTE, BASE_MINUTE + 2)}
    # VEND-A/200: 2 calls, both answered, talk 60 + 3 = 63, one short (3 s < 6 s),
    # PDD 2500 (bucket 2: 2000 < x <= 3000) and 1000 (bucket 0: <= 1000), sum 3500
    assert got[("VEND-A", 200)] == RollupRow("VEND-A", 200, 2, 2, 63, 1, 2, 3500, hist(h0=1, h2=1))
    # VEND-B/486: 2 calls in two minutes, none answered, one PDD 4000 (bucket 3)
    assert got[("VEND-B", 486)] == RollupRow("VEND-B", 486, 2, 0, 0, 0, 1, 4000, hist(h3=1))
    assert len(got) == 2


def test_pdd_buckets_include_their_upper_bound():
    assert pdd_bucket(None) is None and pdd_bucket(0) is None
    assert (pdd_bucket(1), pdd_bucket(1000), pdd_bucket(1001)) == (0, 0, 1)
    assert (pdd_bucket(30000), pdd_bucket(30001)) == (10, 11)


# -- idempotent re-ingest ---------------------------------------------------------

@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_reingest_same_and_overlapping_batch_changes_nothing(store, layout):
    # dense flownos are read back with a range scan, sparse ones with IN lists
    flownos = None
    if layout == "sparse":
        flownos = random.Random(5).sample(range(1, 10**15), 1800)
    batch = varied_batch(1800, flownos=flownos)
    first = store.ingest("t", batch)
    assert (first.received, first.new, first.duplicates) == (1800, 1800, 0)
    rollups, count = all_rollups(store), store.count_cdrs()
    assert count == 1800

    again = store.ingest("t", batch)
    assert (again.received, again.new, again.duplicates) == (1800, 0, 1800)
    assert again.minutes_touched == 0
    assert store.count_cdrs() == 1800
    assert all_rollups(store) == rollups

    # second half of the batch again, plus 300 calls never seen
    extra = varied_batch(300, seed=2, flownos=(
        random.Random(6).sample(range(10**15, 2 * 10**15), 300) if flownos else None))
    overlap = batch[900:] + extra
    res = store.ingest("t", overlap)
    assert (res.received, res.new, res.duplicates) == (1200, 300, 900)
    assert store.count_cdrs() == 1800 + 300

    # the overlap added exactly the 300 new calls: same as ingesting batch + extra once
    fresh = Store(":memory:")
    fresh.ingest("t", batch + extra)
    assert all_rollups(store) == all_rollups(fresh)
    fresh.close()


def test_duplicates_inside_one_batch_count_once(store):
    a, b = make_cdr(end_reason=503), make_cdr(end_reason=503)
    res = store.ingest("t", [a, b, a, a])
    assert (res.received, res.new, res.duplicates) == (4, 2, 2)
    assert store.count_cdrs() == 2
    [row] = store.window_rollups("global", BASE_MINUTE, BASE_MINUTE + 1)
    assert (row.end_reason, row.calls) == (503, 2)


def test_incremental_rollups_equal_a_rebuild_from_raw_rows(store):
    # ~4000 demo calls: normal minutes, the balance incident (reason 8, no vendor)
    # and the scanner (-9, no ingress/account/egress); ingested in overlapping chunks.
    traffic = DemoTraffic(BASE_MS, calls_per_minute=500)
    minutes = list(range(88, 95)) + list(range(210, 216))
    calls = [c for m in minutes for c in traffic.calls_in_minute(BASE_MINUTE + m)]
    assert len(calls) > 3000
    assert any(c.end_reason == 8 for c in calls) and any(c.end_reason == -9 for c in calls)
    for i in range(0, len(calls), 700):
        store.ingest("demo", calls[max(0, i - 100):i + 700])
    assert store.count_cdrs() == len({c.flowno for c in calls})

    lo, hi = BASE_MINUTE + 80, BASE_MINUTE + 220
    incremental = store.rollup_rows(lo, hi)
    store.rebuild_rollups(lo, hi)
    rebuilt = store.rollup_rows(lo, hi)
    assert len(rebuilt) > 1000
    assert incremental == rebuilt


def test_calls_without_gateway_count_globally_but_make_no_empty_group(store):
    calls = [
        make_cdr(end_reason=200, egress="VEND-A"),
        make_cdr(end_reason=8, egress="", callee_ip="", pdd_ms=None),       # billing reject
        make_cdr(end_reason=8, egress="", callee_ip="", pdd_ms=None),
        make_cdr(end_reason=-9, egress="", ingress="", account="", pdd_ms=None),  # scanner
    ]
    store.ingest("t", calls)
    span = (BASE_MINUTE, BASE_MINUTE + 1)
    glob = {r.end_reason: r.calls for r in store.window_rollups("global", *span)}
    assert glob == {200: 1, 8: 2, -9: 1}
    assert {r.group for r in store.window_rollups("egress", *span)} == {"VEND-A"}
    # account: the two reason-8 calls have an account (ACC-1), the scanner none
    acc = {(r.group, r.end_reason): r.calls for r in store.window_rollups("account", *span)}
    assert acc == {("ACC-1", 200): 1, ("ACC-1", 8): 2}
    assert not [r for r in all_rollups(store) if r[0] != "global" and r[2] == ""]
    # and a rebuild agrees
    before = all_rollups(store)
    store.rebuild_rollups(*span)
    assert all_rollups(store) == before


# -- atomic batches, watermark, WAL -----------------------------------------------

def test_watermark_is_saved_with_the_batch_and_survives_reopening(tmp_path):
    path = tmp_path / "wm.db"
    s = Store(path)
    s.ingest("vos-db", [make_cdr()], watermark={"stop_ms": 1_700_000_000_123, "table": "e_cdr_20231114"})
    s.ingest("files", [], file_mark=("a.csv", 10, 99, 0, 0))
    s.close()
    s = Store(path)
    try:
        assert s.watermark("vos-db") == {"stop_ms": 1_700_000_000_123, "table": "e_cdr_20231114"}
        assert s.watermark("files") is None
        assert s.file_already_read("files", "a.csv", 10, 99)
        assert not s.file_already_read("files", "a.csv", 11, 99)
        assert s.count_cdrs() == 1
        assert set(s.watermarks()) == {"vos-db"}
    finally:
        s.close()


def _bad_flowno():
    # a non-integer flowno is refused by the INTEGER PRIMARY KEY: fails while
    # inserting the cdr rows, after the earlier rows of the batch went in
    return make_cdr(flowno=7_000_000_000.5)


def _bad_end_reason():
    # end_reason NULL with talk time: the cdr row inserts, the rollup upsert
    # (end_reason NOT NULL) then fails
    return make_cdr(end_reason=None, talk_s=30, start_ms=at(0) - 30_000)


@pytest.mark.parametrize("bad", [_bad_flowno, _bad_end_reason])
def test_failed_batch_leaves_neither_rows_nor_watermark(tmp_path, bad):
    path = tmp_path / "atomic.db"
    s = Store(path)
    s.ingest("src", [make_cdr(stop_ms=at(0))], watermark={"n": 1})
    rollups = all_rollups(s)
    good = [make_cdr(stop_ms=at(0)) for _ in range(50)]
    with pytest.raises((sqlite3.Error, TypeError, ValueError)):
        s.ingest("src", good + [bad()], watermark={"n": 2}, file_mark=("f.csv", 1, 2, 51, 0))
    assert s.count_cdrs() == 1
    assert all_rollups(s) == rollups
    assert s.watermark("src") == {"n": 1}
    assert not s.file_already_read("src", "f.csv", 1, 2)
    # the store is usable afterwards, and the same good rows now go in
    res = s.ingest("src", good, watermark={"n": 2})
    assert res.new == 50
    s.close()
    s = Store(path)          # and what is on disk agrees
    assert s.count_cdrs() == 51 and s.watermark("src") == {"n": 2}
    s.close()


def test_wal_mode_is_on(store, tmp_path):
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    other = sqlite3.connect(tmp_path / "sentinel.db")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        other.close()


def _plans(store: Store, call) -> list[str]:
    """The query plans of the statements `call` runs on the store's connection."""
    stmts: list[str] = []
    conn = store.db.conn
    conn.set_trace_callback(stmts.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    selects = [s for s in stmts if s.lstrip().upper().startswith("SELECT")]
    assert selects, stmts
    return [detail for sql in selects
            for (*_, detail) in conn.execute("EXPLAIN QUERY PLAN " + sql)]


def test_window_reads_search_the_indexes(store):
    store.ingest("t", varied_batch(500))
    plans = _plans(store, lambda: store.window_rollups("egress", BASE_MINUTE, BASE_MINUTE + 5))
    assert any(p.startswith("SEARCH rollup") for p in plans), plans
    assert not any(p.startswith("SCAN rollup") for p in plans), plans

    plans = _plans(store, lambda: list(store.cdrs_between(at(1, 0), at(3, 0))))
    assert any(p.startswith("SEARCH cdr") for p in plans), plans
    assert not any(p.startswith("SCAN cdr") for p in plans), plans


# -- reads and retention -----------------------------------------------------------

def test_window_rollups_sum_start_inclusive_end_exclusive(store):
    # 1, 2, 4, 8 calls in minutes 0..3: any window's sum names its minutes
    for m, n in enumerate((1, 2, 4, 8)):
        store.ingest("t", [make_cdr(stop_ms=at(m, s), end_reason=486) for s in range(n)])
    def calls(start, end):
        return sum(r.calls for r in store.window_rollups("global", BASE_MINUTE + start, BASE_MINUTE + end))
    assert calls(1, 3) == 2 + 4
    assert calls(0, 4) == 1 + 2 + 4 + 8
    assert calls(3, 4) == 8
    assert calls(2, 2) == 0
    with pytest.raises(ValueError):
        store.window_rollups("vendor", BASE_MINUTE, BASE_MINUTE + 1)


def test_cdrs_between_is_half_open_on_stop_time(store):
    inside1 = make_cdr(stop_ms=at(1, 0))
    inside2 = make_cdr(stop_ms=at(1, 59.999))
    outside = [make_cdr(stop_ms=at(2, 0)), make_cdr(stop_ms=at(0, 59.999))]
    store.ingest("t", [inside2, *outside, inside1])
    got = list(store.cdrs_between(at(1, 0), at(2, 0)))
    assert [r["flowno"] for r in got] == [inside1.flowno, inside2.flowno]   # by stop time
    assert got[0]["egress"] == "VEND-A" and got[0]["minute"] == BASE_MINUTE + 1


def test_prune_removes_old_cdrs_and_rollups_and_keeps_newer(store):
    calls = [make_cdr(stop_ms=at(m, 10), egress=f"VEND-{m}") for m in range(10)]
    store.ingest("t", calls)
    # now = one day and 5 minutes after BASE, retention 1 day -> cutoff at minute 5
    now_ms = BASE_MS + DAY_MS + 5 * 60_000
    deleted = store.prune(1, now_ms, chunk=2)
    assert deleted == 5
    assert store.count_cdrs() == 5
    assert store.earliest_minute() == BASE_MINUTE + 5
    left = {r["flowno"] for r in store.cdrs_between(BASE_MS - DAY_MS, now_ms)}
    assert left == {c.flowno for c in calls[5:]}
    minutes = {row[1] for row in all_rollups(store)}
    assert minutes == {BASE_MINUTE + m for m in range(5, 10)}
    eg = {r.group for r in store.window_rollups("egress", BASE_MINUTE, BASE_MINUTE + 10)}
    assert eg == {f"VEND-{m}" for m in range(5, 10)}
    assert store.prune(1, now_ms) == 0
