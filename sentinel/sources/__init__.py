"""Where CDRs come from. A source yields batches; the store takes each batch
with its watermark in one transaction, so a crash between two batches loses
nothing and re-reads nothing.

A source is any object with `name`, `kind` and `pull(store, now_ms)`, a
generator of `Batch`. Sources report bad rows as `problems`; they never raise
for bad data, only for a source that cannot be read at all.
"""

from __future__ import annotations

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
