"""`sentinel import`: several processes load a folder of exports into the same
store the files source would have made, each file once."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

from sentinel.bulk import import_files
from sentinel.cdr import record_from_cdr
from sentinel.sources.demo import DemoTraffic
from sentinel.sources.files import FilesSource, write_cdr_file
from sentinel.store import Store


def exports(folder, files=6):
    start = int(datetime(2026, 11, 20, 8, tzinfo=timezone.utc).timestamp() * 1000)
    traffic = DemoTraffic(start, calls_per_minute=100)
    folder.mkdir()
    for i in range(files):
        calls = list(traffic.calls_between(start + i * 600_000, start + (i + 1) * 600_000))
        write_cdr_file(folder / f"cdr_{i}.csv", [record_from_cdr(c) for c in calls],
                       header=bool(i % 2))
    (folder / "broken.csv").write_text("flowno,stoptime,endreason\n12,abc,200\n")
    return start


def test_bulk_import_equals_the_files_source(tmp_path):
    start = exports(tmp_path / "drop")
    one = Store(tmp_path / "one.db")
    for batch in FilesSource("files", tmp_path / "drop", settle_seconds=0).pull(one, 0):
        one.ingest("files", batch.cdrs, file_mark=batch.file_mark)
    report = import_files(str(tmp_path / "bulk.db"), tmp_path / "drop", workers=2,
                          settle_seconds=0)
    bulk = Store(tmp_path / "bulk.db")
    assert report.files == 7 and report.new == one.count_cdrs() == bulk.count_cdrs()
    assert report.bad_rows == 1 and any("broken.csv:2" in p for p in report.problems)
    m = start // 60000
    assert bulk.rollup_rows(m, m + 70) == one.rollup_rows(m, m + 70)
    again = import_files(str(tmp_path / "bulk.db"), tmp_path / "drop", workers=2,
                         settle_seconds=0)
    assert (again.files, again.new) == (0, 0)          # each file once


def test_import_command(tmp_path):
    exports(tmp_path / "drop", files=2)
    (tmp_path / "sentinel.toml").write_text('store = "s.db"\n')
    r = subprocess.run([sys.executable, "-m", "sentinel", "import", "drop", "--settle", "0"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "imported 3 files:" in r.stdout and "1 bad rows" in r.stdout
    assert "broken.csv:2" in r.stderr
