"""Call KPIs over a window, per group, computed from the store's rollups.

Definitions (the README repeats them with their sources):
- attempts (`calls`): every CDR whose stop time falls in the window.
- answered: talk time > 0 or a 2xx final response (see `cdr.is_answered`).
- ASR, ITU-T E.411: answered / attempts x 100.
- NER, ITU-T E.425: attempts that ended in answer, user busy, ring-no-answer or
  terminal rejection / attempts x 100. "Effective" outcomes here: answered;
  SIP 486 and 600 (user busy), 480 (no answer), 603 (decline); VOS server end
  reasons 2 (User Busy) and 3 (No Answer). 408 and 403 are NOT effective: on a
  VOS3000 network they mostly mean a gateway that did not answer or refused us,
  which is what NER is meant to expose. This is the RFC 6076 SEER set of codes.
- SER, RFC 6076: answered / (attempts - 3xx) x 100.
- SEER, RFC 6076: effective (as for NER) / (attempts - 3xx) x 100.
- ISA, RFC 6076: attempts ending 408, 500, 503 or 504 / attempts x 100.
- ACD: talk seconds / answered calls (not / attempts).
- PDD: post-dial delay of the egress leg (`calleepdd`, else `callerpdd`), in
  seconds; the average, and the 95th percentile read from a histogram.
- short-call share: answered calls under SHORT_CALL_SECONDS / answered x 100.

Shares and counts of SIP codes, classes and end reasons are read from the
per-end-reason rollup rows, so every measure of every rule comes from one
query per (dimension, window): rules never scan the window themselves.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .store import PDD_BUCKETS_MS, N_PDD_BUCKETS, RollupRow

EFFECTIVE_SIP = frozenset({486, 600, 480, 603})
EFFECTIVE_SERVER_REASONS = frozenset({2, 3})   # VOS: User Busy, No Answer
ISA_SIP = frozenset({408, 500, 503, 504})


def is_effective(end_reason: int) -> bool:
    return end_reason in EFFECTIVE_SIP or end_reason in EFFECTIVE_SERVER_REASONS


@dataclass
class GroupStats:
    """Everything the KPIs need for one group over one span of minutes."""
    calls: int = 0
    answered: int = 0
    talk_s: int = 0
    short_calls: int = 0
    pdd_n: int = 0
    pdd_sum: int = 0
    pdd_hist: list[int] = field(default_factory=lambda: [0] * N_PDD_BUCKETS)
    by_reason: dict[int, list[int]] = field(default_factory=dict)  # raw -> [calls, answered]

    def add(self, r: RollupRow) -> None:
        self.calls += r.calls
        self.answered += r.answered
        self.talk_s += r.talk_s
        self.short_calls += r.short_calls
        self.pdd_n += r.pdd_n
        self.pdd_sum += r.pdd_sum
        if r.pdd_n:
            self.pdd_hist = list(map(operator.add, self.pdd_hist, r.pdd_hist))
        slot = self.by_reason.get(r.end_reason)
        if slot is None:
            self.by_reason[r.end_reason] = [r.calls, r.answered]
        else:
            slot[0] += r.calls
            slot[1] += r.answered

    def merge(self, o: "GroupStats", sign: int = 1) -> None:
        """Add (or, with sign -1, take back) another span's sums. The hot
        loop of sliding windows, hence written out."""
        mine = self.by_reason
        if sign > 0:
            self.calls += o.calls
            self.answered += o.answered
            self.talk_s += o.talk_s
            self.short_calls += o.short_calls
            if o.pdd_n:
                self.pdd_n += o.pdd_n
                self.pdd_sum += o.pdd_sum
                self.pdd_hist = list(map(operator.add, self.pdd_hist, o.pdd_hist))
            for k, ca in o.by_reason.items():
                slot = mine.get(k)
                if slot is None:
                    mine[k] = [ca[0], ca[1]]
                else:
                    slot[0] += ca[0]
                    slot[1] += ca[1]
            return
        self.calls -= o.calls
        self.answered -= o.answered
        self.talk_s -= o.talk_s
        self.short_calls -= o.short_calls
        if o.pdd_n:
            self.pdd_n -= o.pdd_n
            self.pdd_sum -= o.pdd_sum
            self.pdd_hist = list(map(operator.sub, self.pdd_hist, o.pdd_hist))
        for k, ca in o.by_reason.items():
            slot = mine[k]
            slot[0] -= ca[0]
            slot[1] -= ca[1]
            if slot[0] == 0:
                del mine[k]

    def count_where(self, pred: Callable[[int], bool]) -> int:
        return sum(v[0] for k, v in self.by_reason.items() if pred(k))

    def top_reasons(self, n: int = 5) -> list[tuple[int, int]]:
        return sorted(((k, v[0]) for k, v in self.by_reason.items()),
                      key=lambda kv: (-kv[1], kv[0]))[:n]


def group_stats(rows: Iterable[RollupRow]) -> dict[str, GroupStats]:
    out: dict[str, GroupStats] = {}
    for r in rows:
        s = out.get(r.group)
        if s is None:
            s = out[r.group] = GroupStats()
        s.add(r)
    return out


def _pct(num: float, den: float) -> float | None:
    return 100.0 * num / den if den else None


def asr(s: GroupStats) -> float | None:
    return _pct(s.answered, s.calls)


def ner(s: GroupStats) -> float | None:
    effective = s.answered + sum(c - a for k, (c, a) in s.by_reason.items() if is_effective(k))
    return _pct(effective, s.calls)


def _redirected(s: GroupStats) -> int:
    return s.count_where(lambda k: 300 <= k <= 399)


def ser(s: GroupStats) -> float | None:
    return _pct(s.answered, s.calls - _redirected(s))


def seer(s: GroupStats) -> float | None:
    effective = s.answered + sum(c - a for k, (c, a) in s.by_reason.items() if is_effective(k))
    return _pct(effective, s.calls - _redirected(s))


def isa(s: GroupStats) -> float | None:
    return _pct(s.count_where(ISA_SIP.__contains__), s.calls)


def acd(s: GroupStats) -> float | None:
    return s.talk_s / s.answered if s.answered else None


def pdd_avg(s: GroupStats) -> float | None:
    return s.pdd_sum / s.pdd_n / 1000.0 if s.pdd_n else None


def pdd_quantile(s: GroupStats, q: float) -> float | None:
    """Quantile from the PDD histogram, interpolated inside the bucket (seconds)."""
    if not s.pdd_n:
        return None
    rank = q * s.pdd_n
    seen = 0
    lower = 0
    for i, n in enumerate(s.pdd_hist):
        upper = PDD_BUCKETS_MS[i] if i < len(PDD_BUCKETS_MS) else None
        if n and seen + n >= rank:
            if upper is None:          # open last bucket: report its lower bound
                return lower / 1000.0
            return (lower + (upper - lower) * (rank - seen) / n) / 1000.0
        seen += n
        lower = upper if upper is not None else lower
    return lower / 1000.0


def pdd_p95(s: GroupStats) -> float | None:
    return pdd_quantile(s, 0.95)


def short_call_share(s: GroupStats) -> float | None:
    return _pct(s.short_calls, s.answered)


@dataclass(frozen=True)
class KPI:
    name: str
    compute: Callable[[GroupStats], float | None]
    unit: str            # "%", "s" or "" (a count)
    description: str
    source: str


KPIS: dict[str, KPI] = {k.name: k for k in (
    KPI("calls", lambda s: float(s.calls), "", "call attempts (CDRs) in the window", "-"),
    KPI("answered", lambda s: float(s.answered), "", "answered attempts", "-"),
    KPI("asr", asr, "%", "answer seizure ratio", "ITU-T E.411"),
    KPI("ner", ner, "%", "network effectiveness ratio", "ITU-T E.425"),
    KPI("ser", ser, "%", "session establishment ratio", "RFC 6076"),
    KPI("seer", seer, "%", "session establishment effectiveness ratio", "RFC 6076"),
    KPI("isa", isa, "%", "ineffective session attempts (408, 500, 503, 504)", "RFC 6076"),
    KPI("acd", acd, "s", "average call duration of answered calls", "industry usage (ALOC)"),
    KPI("pdd_avg", pdd_avg, "s", "average post-dial delay", "ITU-T E.721"),
    KPI("pdd_p95", pdd_p95, "s", "95th percentile post-dial delay", "ITU-T E.721"),
    KPI("short_call_share", short_call_share, "%",
        "answered calls shorter than 6 s, share of answered", "FAS practice"),
)}


# -- selectors: share or count of SIP codes, classes, end reasons -----------

@dataclass(frozen=True)
class Selector:
    """Which end reasons a share/count measure counts."""
    kind: str                 # "sip", "class" or "reason"
    values: tuple[int, ...]   # codes; for class the leading digit (5 for 5xx)

    def matches(self, end_reason: int) -> bool:
        if self.kind == "class":
            return 100 <= end_reason <= 699 and end_reason // 100 in self.values
        # A SIP code and a raw end reason are the same integer in the mixed
        # field; "sip" only admits 100-699 so "sip 8" cannot be written.
        return end_reason in self.values

    def count(self, s: "GroupStats") -> int:
        """Calls of the group this selector counts."""
        if self.kind == "class":
            classes = self.values
            n = 0
            for k, slot in s.by_reason.items():
                if 100 <= k <= 699 and k // 100 in classes:
                    n += slot[0]
            return n
        by_reason = s.by_reason
        n = 0
        for v in self.values:
            slot = by_reason.get(v)
            if slot is not None:
                n += slot[0]
        return n

    @property
    def key(self) -> str:
        if self.kind == "class":
            return "class_" + "_".join(f"{v}xx" for v in self.values)
        return self.kind + "_" + "_".join(f"m{-v}" if v < 0 else str(v) for v in self.values)

    def describe(self) -> str:
        if self.kind == "class":
            return " or ".join(f"{v}xx" for v in self.values)
        label = "SIP" if self.kind == "sip" else "end reason"
        return f"{label} {'/'.join(str(v) for v in self.values)}"


@dataclass(frozen=True)
class Measure:
    """What a rule measures: a KPI, or the share/count of a selector."""
    kpi: str | None = None
    op: str | None = None         # "share" or "count"
    selector: Selector | None = None

    @property
    def field(self) -> str:
        return self.kpi if self.kpi else f"{self.op}_{self.selector.key}"

    @property
    def unit(self) -> str:
        if self.kpi:
            return KPIS[self.kpi].unit
        return "%" if self.op == "share" else ""

    @property
    def is_count(self) -> bool:
        return self.unit == ""

    def value(self, s: GroupStats) -> float | None:
        if self.kpi:
            return KPIS[self.kpi].compute(s)
        n = self.selector.count(s)
        return float(n) if self.op == "count" else _pct(n, s.calls)

    def describe(self) -> str:
        if self.kpi:
            return self.kpi.upper() if len(self.kpi) <= 4 else self.kpi.replace("_", " ")
        return f"{self.op} of {self.selector.describe()}"


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "s":
        return f"{value:.1f} s"
    if unit == "min":
        return f"{value:.0f} min"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
