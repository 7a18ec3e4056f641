"""Small shared helpers for the unit tests.

- `BASE_MS`: a fixed instant on a minute boundary (2023-11-14 22:13 UTC) that
  test data is placed around; `BASE_MINUTE` is the same as an epoch minute.
- `make_cdr(**overrides)`: a valid `sentinel.cdr.CDR` with sensible defaults
  and a flowno no other call of the test session has. Any field can be
  overridden. Unless given explicitly, `talk_s` is 60 for a 2xx end reason and
  0 otherwise, `start_ms` is the answer time (`stop_ms - talk_s * 1000`, or 0
  for a call with no talk) and `billed_s` equals `talk_s`.
- `at(minute, second=30)`: epoch ms of `second` seconds into the `minute`-th
  minute after BASE_MS (a handy `stop_ms`).

Import with `from .helpers import make_cdr, at, BASE_MS` (tests/ is a package).
"""

from __future__ import annotations

import itertools
from typing import Any

from sentinel.cdr import CDR

BASE_MS = 1_700_000_000_000 - 1_700_000_000_000 % 60_000   # 1_699_999_980_000
BASE_MINUTE = BASE_MS // 60_000

_flownos = itertools.count(5_000_000_001)


def at(minute: int, second: float = 30) -> int:
    """Epoch ms of `second` seconds into minute number `minute` after BASE_MS."""
    return BASE_MS + minute * 60_000 + int(second * 1000)


def make_cdr(**overrides: Any) -> CDR:
    """A valid CDR: an answered 60 s call ending 30 s into BASE_MINUTE, unless overridden."""
    fields: dict[str, Any] = dict(
        flowno=next(_flownos),
        stop_ms=at(0),
        caller="441632960001",
        callee="4420794600001",
        ingress="CUST-A",
        egress="VEND-A",
        account="ACC-1",
        caller_ip="198.51.100.10",
        callee_ip="192.0.2.10",
        pdd_ms=2500,
        end_direction=0,
        end_reason=200,
        q850=None,
    )
    fields.update(overrides)
    if "talk_s" not in fields:
        fields["talk_s"] = 60 if 200 <= fields["end_reason"] <= 299 else 0
    if "start_ms" not in fields:
        fields["start_ms"] = fields["stop_ms"] - fields["talk_s"] * 1000 if fields["talk_s"] else 0
    fields.setdefault("billed_s", fields["talk_s"])
    return CDR(**fields)
