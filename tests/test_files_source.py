"""sentinel.sources.files: VOS3000 CDR exports dropped in a folder, read once,
bad rows reported with file, line and field. Real files, real store."""

from __future__ import annotations

import csv
import gzip
import io
import os
import time
from pathlib import Path

import pytest

from sentinel.cdr import E_CDR_COLUMNS, record_from_cdr
from sentinel.sources import SourceError
from sentinel.sources.files import FilesSource, read_cdr_file, write_cdr_file
from sentinel.store import Store

from .helpers import BASE_MINUTE, at, make_cdr

NOW_MS = at(30)


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "drop"
    d.mkdir()
    return d


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "sentinel.db")
    yield s
    s.close()


def source(folder: Path, **kw) -> FilesSource:
    kw.setdefault("settle_seconds", 0)
    return FilesSource("drop", folder, **kw)


def drain(src: FilesSource, store: Store):
    """Pull every pending file into the store as the app does.
    Returns (new, duplicates, problems, number of batches)."""
    new = dup = batches = 0
    problems: list[str] = []
    for b in src.pull(store, NOW_MS):
        res = store.ingest(src.name, b.cdrs, watermark=b.watermark, file_mark=b.file_mark)
        new += res.new
        dup += res.duplicates
        problems += b.problems
        batches += 1
    return new, dup, problems, batches


def sample_calls(n: int = 12) -> list:
    """Varied calls: answered, failed, no vendor (reason 8), a Q.850 cause."""
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(make_cdr(stop_ms=at(i % 5), talk_s=30 + i, end_direction=0))
        elif kind == 1:
            out.append(make_cdr(stop_ms=at(i % 5), end_reason=503, q850=34, end_direction=1,
                                egress="VEND-B"))
        elif kind == 2:
            out.append(make_cdr(stop_ms=at(i % 5), end_reason=8, egress="", callee_ip="",
                                pdd_ms=None, end_direction=2))
        else:
            out.append(make_cdr(stop_ms=at(i % 5), end_reason=486, callee="+4477001122",
                                end_direction=None))
    return out


def stored_flownos(store: Store) -> set[int]:
    return {r["flowno"] for r in store.cdrs_between(at(-60), at(60))}


def global_calls(store: Store) -> int:
    return sum(r.calls for r in store.window_rollups("global", BASE_MINUTE - 60, BASE_MINUTE + 60))


# -- the shapes of export ------------------------------------------------------------

@pytest.mark.parametrize("header", [False, True], ids=["headerless", "header-row"])
def test_csv_export_round_trips_every_field(folder, header):
    calls = sample_calls()
    path = folder / "cdr.csv"
    write_cdr_file(path, [record_from_cdr(c) for c in calls], header=header)
    got = [item for _, item in read_cdr_file(path)]
    assert got == calls


@pytest.mark.parametrize("header", [False, True], ids=["headerless", "header-row"])
def test_csv_files_are_ingested(folder, store, header):
    calls = sample_calls()
    write_cdr_file(folder / "a.csv", [record_from_cdr(c) for c in calls], header=header)
    new, dup, problems, batches = drain(source(folder), store)
    assert (new, dup, problems, batches) == (12, 0, [], 1)
    assert stored_flownos(store) == {c.flowno for c in calls}
    assert global_calls(store) == 12


def test_gzip_file_is_read(folder, store):
    calls = sample_calls(8)
    plain = folder.parent / "plain.csv"
    write_cdr_file(plain, [record_from_cdr(c) for c in calls], header=False)
    with gzip.open(folder / "day.csv.gz", "wb") as fh:
        fh.write(plain.read_bytes())
    new, _, problems, batches = drain(source(folder), store)
    assert (new, problems, batches) == (8, [], 1)
    assert stored_flownos(store) == {c.flowno for c in calls}


def test_header_with_web_api_names(folder):
    c = make_cdr(end_reason=486)
    cols = ["flowNo", "start", "stop", "holdTime", "feeTime", "callerE164", "calleeE164",
            "callerGateway", "calleeGateway", "account", "callerip", "calleeip",
            "endDirection", "endReason", "calleePdd"]
    vals = [c.flowno, c.start_ms, c.stop_ms, c.talk_s, c.billed_s, c.caller, c.callee,
            c.ingress, c.egress, c.account, c.caller_ip, c.callee_ip, c.end_direction,
            c.end_reason, c.pdd_ms]
    (folder / "api.csv").write_text(",".join(cols) + "\n" + ",".join(map(str, vals)) + "\n")
    assert [item for _, item in read_cdr_file(folder / "api.csv")] == [c]


def test_header_written_with_a_byte_order_mark(folder, store):
    # Excel's "CSV UTF-8" starts the file with a BOM; flowno is the first column here
    calls = sample_calls(4)
    cols = ["flowno"] + [k for k in record_from_cdr(calls[0]) if k != "flowno"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for c in calls:
        rec = record_from_cdr(c)
        w.writerow(["" if rec[k] is None else rec[k] for k in cols])
    (folder / "excel.csv").write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode())
    new, _, problems, _ = drain(source(folder), store)
    assert (new, problems) == (4, [])


def test_windows_line_endings_and_blank_lines(folder, store):
    calls = sample_calls(3)
    path = folder / "win.csv"
    write_cdr_file(path, [record_from_cdr(c) for c in calls], header=True)
    text = path.read_text().replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n\r\n"
    path.write_bytes(text.encode())
    assert [item for _, item in read_cdr_file(path)] == calls


# -- bad rows -----------------------------------------------------------------------

def e_cdr_row(c, **over) -> list[str]:
    rec = record_from_cdr(c)
    rec.update(over)
    return ["" if rec.get(col) is None else str(rec.get(col, "")) for col in E_CDR_COLUMNS]


def test_bad_rows_are_counted_and_located(folder, store):
    good = [make_cdr(stop_ms=at(1)) for _ in range(3)]
    quoted = make_cdr(stop_ms=at(2), account="ACC, \"quoted\" Ltd", egress="VEND,7")
    short, bad_stop, bad_hold = make_cdr(), make_cdr(), make_cdr()
    lines = [
        e_cdr_row(good[0]),                                                  # 1
        e_cdr_row(short)[:10],                                               # 2 too few columns
        e_cdr_row(bad_stop, stoptime="yesterday"),                           # 3
        e_cdr_row(quoted, customername="Acme, Inc.", calleroriginalinfo='a "b", c'),  # 4
        e_cdr_row(bad_hold, holdtime="-20"),                                 # 5
        e_cdr_row(good[1]),                                                  # 6
        e_cdr_row(good[2]),                                                  # 7
    ]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    path = folder / "mixed.csv"
    path.write_text(buf.getvalue())
    assert '"ACC, ""quoted"" Ltd"' in path.read_text().splitlines()[3]

    new, dup, problems, _ = drain(source(folder), store)
    assert (new, dup) == (4, 0)                           # 3 good + the quoted one
    assert stored_flownos(store) == {c.flowno for c in good + [quoted]}
    [row] = [r for r in store.cdrs_between(at(2), at(3))]
    assert (row["account"], row["egress"]) == ('ACC, "quoted" Ltd', "VEND,7")

    assert len(problems) == 3
    by_line = {p.split(": ", 1)[0]: p for p in problems}
    assert set(by_line) == {f"{path}:2", f"{path}:3", f"{path}:5"}
    assert "'row'" in by_line[f"{path}:2"] and "10 columns" in by_line[f"{path}:2"]
    assert "'stoptime'" in by_line[f"{path}:3"] and "yesterday" in by_line[f"{path}:3"]
    assert "'holdtime'" in by_line[f"{path}:5"] and "negative" in by_line[f"{path}:5"]

    seen = store.db.conn.execute("SELECT name, rows, bad_rows FROM file_seen").fetchall()
    assert seen == [("mixed.csv", 4, 3)]


def test_many_bad_rows_are_summarised(folder, store):
    rows = [e_cdr_row(make_cdr(), endreason="busy") for _ in range(25)] + [e_cdr_row(make_cdr())]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    (folder / "junk.csv").write_text(buf.getvalue())
    new, _, problems, _ = drain(source(folder), store)
    assert new == 1
    # 20 listed (lines 1..20), then one line for the 5 others
    assert len(problems) == 21
    assert all(f"junk.csv:{i + 1}: " in problems[i] and "'endreason'" in problems[i]
               for i in range(20))
    assert "5 more bad rows" in problems[-1]


def test_unreadable_gzip_is_reported_and_other_files_still_read(folder, store):
    (folder / "broken.csv.gz").write_bytes(b"this is not gzip data")
    write_cdr_file(folder / "ok.csv", [record_from_cdr(c) for c in sample_calls(2)], header=False)
    new, _, problems, batches = drain(source(folder), store)
    assert (new, batches) == (2, 2)
    [p] = problems
    assert "broken.csv.gz" in p and "cannot read" in p


def test_row_with_wrong_column_count_under_a_header(folder, store):
    c1, c2, c3 = make_cdr(), make_cdr(), make_cdr()
    path = folder / "h.csv"
    write_cdr_file(path, [record_from_cdr(c) for c in (c1, c2, c3)], header=True)
    lines = path.read_text().splitlines()
    lines[2] += ",extra"                          # line 3 = the second data row
    path.write_text("\n".join(lines) + "\n")
    new, _, problems, _ = drain(source(folder), store)
    assert new == 2 and stored_flownos(store) == {c1.flowno, c3.flowno}
    [p] = problems
    assert p.startswith(f"{path}:3:") and "'row'" in p


# -- each file read once ---------------------------------------------------------------

def test_each_file_is_read_once_even_after_reopening(folder, tmp_path):
    write_cdr_file(folder / "a.csv", [record_from_cdr(c) for c in sample_calls(6)], header=False)
    write_cdr_file(folder / "b.csv", [record_from_cdr(c) for c in sample_calls(4)], header=True)
    db = tmp_path / "once.db"
    s = Store(db)
    assert drain(source(folder), s)[:2] == (10, 0)
    assert drain(source(folder), s) == (0, 0, [], 0)
    s.close()
    s = Store(db)
    try:
        assert source(folder).pending_files(s) == []
        assert drain(source(folder), s) == (0, 0, [], 0)
        assert s.count_cdrs() == 10
    finally:
        s.close()


def test_rewritten_file_is_read_again_without_double_counting(folder, store):
    first = sample_calls(8)
    path = folder / "today.csv"
    write_cdr_file(path, [record_from_cdr(c) for c in first], header=False)
    assert drain(source(folder), store)[:2] == (8, 0)

    # the export grows: same rows plus 4 new ones (new size and mtime)
    more = first + sample_calls(4)
    write_cdr_file(path, [record_from_cdr(c) for c in more], header=False)
    past = time.time() - 100
    os.utime(path, (past, past))
    new, dup, problems, batches = drain(source(folder), store)
    assert (new, dup, problems, batches) == (4, 8, [], 1)
    assert store.count_cdrs() == 12 and global_calls(store) == 12

    # touched only (same size, new mtime): read again, all duplicates
    os.utime(path, (past + 50, past + 50))
    assert drain(source(folder), store)[:2] == (0, 12)
    assert store.count_cdrs() == 12 and global_calls(store) == 12


# -- folder problems and files still being written ---------------------------------------

def test_missing_folder_raises_source_error_naming_it(tmp_path, store):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(SourceError) as ei:
        list(source(missing).pull(store, NOW_MS))
    assert str(missing) in str(ei.value)


def test_file_still_being_written_waits(folder, store):
    path = folder / "live.csv"
    write_cdr_file(path, [record_from_cdr(c) for c in sample_calls(3)], header=False)
    src = source(folder, settle_seconds=60)
    assert src.pending_files(store) == []
    assert drain(src, store) == (0, 0, [], 0)
    old = time.time() - 120                     # last written two minutes ago
    os.utime(path, (old, old))
    assert src.pending_files(store) == [path]
    assert drain(src, store)[:2] == (3, 0)


def test_other_files_and_part_files_are_ignored(folder, store):
    write_cdr_file(folder / "a.csv", [record_from_cdr(c) for c in sample_calls(2)], header=False)
    (folder / "notes.md").write_text("not a CDR file")
    (folder / "b.csv.part").write_text("half,written")
    assert [p.name for p in source(folder).pending_files(store)] == ["a.csv"]
