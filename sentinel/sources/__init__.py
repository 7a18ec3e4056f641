"""Where CDRs come from. A source yields batches; the store takes each batch
with its watermark in one transaction, so a crash between two batches loses
nothing and re-reads nothing.

A source is a class with:
- `kind` (its name in the config) and `OPTIONS` (config key -> description;
  `load_config` rejects any other key);
- `from_options(name, options, base_dir)` to build it from the config;
- `pull(store, now_ms)`, a generator of `Batch`. It reads its own watermark
  with `store.watermark(name)`; the watermark in each Batch is saved with the
  batch's rows. Bad rows are reported in `Batch.problems` (naming file and
  line, or table and flowno) and skipped; `pull` raises `SourceError` only when
  the source cannot be read at all (server down, folder missing).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from ..cdr import CDR


@dataclass
class Batch:
    cdrs: list[CDR]
    watermark: Any = None
    file_mark: tuple[str, int, int, int, int] | None = None
    problems: list[str] = field(default_factory=list)
    label: str = ""


class SourceError(Exception):
    """The source cannot be read right now (missing folder, server down...)."""


# kind -> "module:Class"; imported only when used, so a missing optional
# driver (a MySQL client) never breaks the other sources.
SOURCE_KINDS = {
    "demo": "sentinel.sources.demo:DemoSource",
    "files": "sentinel.sources.files:FilesSource",
    "mysql": "sentinel.sources.mysql:MySQLSource",
    "vosapi": "sentinel.sources.vosapi:VosApiSource",
}


def reject_unknown_options(options: dict, known: dict) -> None:
    """A source built from options (not only through the config loader, which
    checks too) refuses keys it does not know, naming them."""
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r}; known: "
                         + ", ".join(sorted(known)))


def source_class(kind: str):
    if kind not in SOURCE_KINDS:
        raise KeyError(kind)
    module, cls = SOURCE_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)
