"""VOS3000 CDR exports dropped in a folder.

Accepts the two shapes seen in the field:
- headerless CSV rows in `e_cdr` column order (what public importers pull over
  SFTP); rows may stop after `endreason`, and the order can be overridden in
  the config for installations whose export differs;
- CSV with a header row of `e_cdr` column names (or the Web API's names).

Each file is read once: it is remembered by name, size and modification time
in the same transaction as its rows. A bad row is counted and reported with
file, line and field, and skipped; it never stops the file or the daemon.
A file still being written (modified in the last few seconds) waits for the
next pull.
"""

from __future__ import annotations

import csv
import gzip
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

from ..cdr import CDRError, E_CDR_COLUMNS, RowParser
from . import Batch, SourceError

REQUIRED_HEADERLESS = E_CDR_COLUMNS.index("endreason") + 1
MAX_PROBLEMS_LISTED = 20


def _looks_like_header(row: Sequence[str]) -> bool:
    names = {c.strip().lower() for c in row}
    return "flowno" in names or "stoptime" in names or "flowNo".lower() in names


def _rows(fh) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a CSV file. VOS3000 exports are plain comma
    separated values; a line with no quote is split directly (several times
    faster), a quoted one goes through the csv module."""
    for line_no, line in enumerate(fh, 1):
        line = line.rstrip("\r\n")
        if '"' not in line:
            yield line_no, line.split(",")
        else:
            yield line_no, next(csv.reader([line]))


def read_cdr_file(path: Path, columns: Sequence[str] = E_CDR_COLUMNS):
    """Yield (line_number, CDR or CDRError) for every data row of one file."""
    opener = gzip.open if path.suffix == ".gz" else open
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte order mark.
    with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as fh:
        parser = RowParser(columns)
        headerless_minimum = REQUIRED_HEADERLESS if tuple(columns) == E_CDR_COLUMNS else parser.width
        width = None               # columns of the header, when there is one
        for line, row in _rows(fh):
            if len(row) == 1 and not row[0].strip():
                continue
            if line == 1 and _looks_like_header(row):
                parser = RowParser([c.strip() for c in row])
                width = len(row)
                continue
            if width is None and len(row) < headerless_minimum:
                yield line, CDRError("row", f"{len(row)} columns",
                                     f"needs at least {headerless_minimum} columns in e_cdr order")
                continue
            if width is not None and len(row) != width:
                yield line, CDRError("row", f"{len(row)} columns", f"header has {width} columns")
                continue
            try:
                yield line, parser(row)
            except CDRError as e:
                yield line, e


class FilesSource:
    kind = "files"
    OPTIONS = {
        "folder": "folder where VOS3000 CDR exports are dropped (required)",
        "columns": "column order of headerless files (default: e_cdr order)",
        "settle_seconds": "skip files modified more recently than this (default 5)",
    }

    @classmethod
    def from_options(cls, name: str, options: dict, base_dir=None) -> "FilesSource":
        if "folder" not in options:
            raise ValueError("key 'folder' is required")
        folder = Path(options["folder"])
        if base_dir is not None and not folder.is_absolute():
            folder = Path(base_dir) / folder
        return cls(name, folder, columns=options.get("columns"),
                   settle_seconds=options.get("settle_seconds", 5.0))

    def __init__(self, name: str, folder: str | Path, *, patterns: Sequence[str] = ("*.csv", "*.csv.gz", "*.txt"),
                 columns: Sequence[str] | None = None, settle_seconds: float = 5.0):
        self.name = name
        self.folder = Path(folder)
        self.patterns = tuple(patterns)
        self.columns = tuple(columns) if columns else E_CDR_COLUMNS
        self.settle_seconds = settle_seconds

    def pending_files(self, store) -> list[Path]:
        if not self.folder.is_dir():
            raise SourceError(f"files source {self.name!r}: folder {self.folder} does not exist")
        now = time.time()
        out = []
        for p in sorted({f for pat in self.patterns for f in self.folder.glob(pat)}):
            st = p.stat()
            # A file modified in the future (clock skew, `sftp -p`) counts as settled.
            if not p.is_file() or 0 <= now - st.st_mtime < self.settle_seconds:
                continue
            if not store.file_already_read(self.name, p.name, st.st_size, st.st_mtime_ns):
                out.append(p)
        return out

    def pull(self, store, now_ms: int) -> Iterator[Batch]:
        for p in self.pending_files(store):
            yield self.read(p)

    def read(self, p: Path) -> Batch:
        """One file as one batch: its good rows, and its bad ones reported
        with file, line and field. Never raises for bad content."""
        st = p.stat()
        cdrs, problems, bad = [], [], 0
        try:
            for line, item in read_cdr_file(p, self.columns):
                if isinstance(item, CDRError):
                    bad += 1
                    if len(problems) < MAX_PROBLEMS_LISTED:
                        problems.append(f"{p}:{line}: {item}")
                else:
                    cdrs.append(item)
        except (OSError, EOFError, csv.Error, UnicodeError) as e:
            problems.append(f"{p}: cannot read: {e}")
            bad += 1
        if bad > len(problems):
            problems.append(f"{p}: ... and {bad - len(problems)} more bad rows")
        return Batch(cdrs=cdrs, file_mark=(p.name, st.st_size, st.st_mtime_ns, len(cdrs), bad),
                     problems=problems, label=f"{p.name}: {len(cdrs)} rows, {bad} bad")


def write_cdr_file(path: Path, records: list[dict], *, header: bool = True,
                   columns: Sequence[str] = E_CDR_COLUMNS) -> None:
    """Write records as a VOS3000-style export (for demos, tests, benchmarks)."""
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(columns)
        for rec in records:
            w.writerow(["" if rec.get(c) is None else rec.get(c, "") for c in columns])
    os.replace(tmp, path)
