"""Crafted traffic for tests: a window of calls with a chosen outcome mix.

`window_calls` spreads calls evenly over the minutes before `now_ms`, so a
rule's window sees exactly what the test put there.
"""

from __future__ import annotations

import itertools
from typing import Mapping

from sentinel.cdr import CDR

NOW_MS = 1_795_249_200_000          # 2026-11-21 08:20 UTC, on a minute boundary
_flowno = itertools.count(10_000_000_000)


def window_calls(now_ms: int, minutes: int, codes: Mapping[int, int], *,
                 egress: str = "VEND-T", ingress: str = "CUST-T", account: str = "ACC-T",
                 caller_ip: str = "198.51.100.200", callee: str = "88017000000",
                 talk_s: int = 60, pdd_ms: int = 2500, offset_min: int = 0) -> list[CDR]:
    """`codes` maps end reason -> number of calls; 200 calls are answered with
    `talk_s` seconds. Calls end inside [now - minutes - offset, now - offset)."""
    out = []
    total = sum(codes.values())
    end_ms = now_ms - offset_min * 60000
    span_ms = minutes * 60000
    i = 0
    for code, n in codes.items():
        for _ in range(n):
            stop = end_ms - span_ms + (i * span_ms) // max(total, 1) + 1000
            answered = code == 200
            talk = talk_s if answered else 0
            out.append(CDR(
                flowno=next(_flowno), start_ms=stop - talk * 1000 if answered else 0,
                stop_ms=stop, talk_s=talk, billed_s=talk, caller="15550001111",
                callee=callee, ingress=ingress,
                egress="" if code in (8, -9, 17, 18, 19) else egress,
                account="" if code == -9 else account, caller_ip=caller_ip,
                callee_ip="192.0.2.9", pdd_ms=pdd_ms, end_direction=1, end_reason=code))
            i += 1
    return out


def scale(codes: Mapping[int, int], factor: float) -> dict[int, int]:
    return {c: max(0, round(n * factor)) for c, n in codes.items()}
