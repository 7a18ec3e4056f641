"""Shared helpers for the benchmarks: demo traffic as VOS3000 export files."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from sentinel.cdr import record_from_cdr
from sentinel.sources.demo import DemoTraffic
from sentinel.sources.files import write_cdr_file

BENCH_START_MS = 1_795_680_000_000 - 1_795_680_000_000 % 3600_000   # a fixed hour in 2026


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem_gb:.0f} GiB, {cpu or platform.processor()}, Python {platform.python_version()}"


def write_export_files(folder: Path, rows: int, minutes: int, *, files: int = 10,
                       header: bool = False) -> int:
    """Write `rows` demo CDRs spread over `minutes` as `files` headerless CSVs."""
    folder.mkdir(parents=True, exist_ok=True)
    # The demo's daily rhythm thins traffic at night: ask for twice the rate
    # and stop at `rows`, so every row lands inside the first `minutes`.
    traffic = DemoTraffic(BENCH_START_MS, calls_per_minute=max(1, 2 * rows // minutes),
                          incidents=())
    records = []
    written = 0
    per_file = rows // files + 1
    n_file = 0
    for m in range(minutes):
        for c in traffic.calls_in_minute(BENCH_START_MS // 60000 + m):
            records.append(record_from_cdr(c))
            if len(records) >= per_file:
                write_cdr_file(folder / f"cdr_{n_file:03d}.csv", records, header=header)
                written += len(records)
                n_file += 1
                records = []
            if written + len(records) >= rows:
                break
        if written + len(records) >= rows:
            break
    if records:
        write_cdr_file(folder / f"cdr_{n_file:03d}.csv", records, header=header)
        written += len(records)
    return written


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
