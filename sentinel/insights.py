"""Live figures for one code, read from the store: what Sentinel sees of it right now.

`code_figures(store, codes, now_ms, rules)` answers, for the end reason values
`codes` (a SIP code is its own value in the mixed `endreason` field; a server
or internal end reason is its raw value):

- how many calls ended with it in the last hour, out of how many, and the share;
- the groups it concentrates on: egress (vendor) gateways and accounts, plus
  ingress gateways and caller IPs (useful when the calls never reached a vendor);
- its trend against two baselines, named in the answer: the same hour
  yesterday, and the preceding three hours (hourly average);
- the alerts firing or pending on it: alerts whose rule measures that code
  (`share of sip 488`, `count of reason 8`, or a class such as `5xx`), from
  the alert table and the current rules, with any silence that covers them.

Everything comes from the per-minute rollups (one query per dimension and
span), so the cost does not depend on the call volume. Nothing here writes.
Windows are whole closed minutes, as in `evaluate`: the last hour at 10:07:30
is 09:07:00-10:07:00.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .alerts import FIRING, PENDING, render
from .metrics import GroupStats, group_stats
from .rules import Rule, fmt_minutes
from .store import Store

WINDOW_MIN = 60
PRECEDING_HOURS = 3
TOP_N = 5
DIMENSIONS = ("egress", "account", "ingress", "caller_ip")


@dataclass(frozen=True)
class GroupFigure:
    group: str
    calls: int            # calls of this group that ended with the code
    group_calls: int      # every call of this group in the window

    @property
    def share_of_group(self) -> float | None:
        return 100.0 * self.calls / self.group_calls if self.group_calls else None


@dataclass(frozen=True)
class BaselineFigure:
    label: str            # "same hour yesterday", "preceding 3 h, hourly average"
    start_min: int
    end_min: int
    matching: float       # calls with the code, per hour
    calls: float          # every call, per hour

    @property
    def share(self) -> float | None:
        return 100.0 * self.matching / self.calls if self.calls else None


@dataclass(frozen=True)
class AlertFigure:
    rule_id: str
    group: str
    state: str            # "firing" or "pending"
    severity: str
    title: str
    measure: str          # "share of SIP 488"
    value: str            # formatted, with its unit
    threshold: str
    since_ms: int | None
    exact: bool           # the rule measures exactly these codes (not a set or a class)
    silenced_until_ms: int | None = None


@dataclass
class CodeFigures:
    codes: tuple[int, ...]
    now_ms: int
    start_min: int
    end_min: int
    calls: int = 0                         # every call in the window
    matching: int = 0                      # calls that ended with the code
    top: dict[str, list[GroupFigure]] = field(default_factory=dict)
    unrouted: int = 0                      # matching calls with no egress gateway
    baselines: list[BaselineFigure] = field(default_factory=list)
    alerts: list[AlertFigure] = field(default_factory=list)
    watching: list[tuple[str, str]] = field(default_factory=list)   # (rule id, what it does)
    latest_ms: int | None = None           # stop time of the newest stored CDR (minute)

    @property
    def window_min(self) -> int:
        return self.end_min - self.start_min

    @property
    def share(self) -> float | None:
        return 100.0 * self.matching / self.calls if self.calls else None

    @property
    def stale_min(self) -> int | None:
        """Minutes since the newest stored CDR, when that is before the window's end."""
        if self.latest_ms is None:
            return None
        gap = self.end_min - self.latest_ms // 60000
        return gap if gap > 1 else None


def _matching(s: GroupStats | None, codes: frozenset[int]) -> int:
    if s is None:
        return 0
    return s.count_where(codes.__contains__)


def _global(store: Store, start: int, end: int) -> GroupStats | None:
    return group_stats(store.window_rollups("global", start, end)).get("")


def code_figures(store: Store, codes: Iterable[int], now_ms: int,
                 rules: Mapping[str, Rule] | None = None, *,
                 window_min: int = WINDOW_MIN, top_n: int = TOP_N) -> CodeFigures:
    """What the store shows of calls that ended with any of `codes` (see module doc)."""
    codes_t = tuple(sorted(set(int(c) for c in codes)))
    wanted = frozenset(codes_t)
    end = now_ms // 60000
    start = end - window_min
    fig = CodeFigures(codes=codes_t, now_ms=now_ms, start_min=start, end_min=end)

    g = _global(store, start, end)
    fig.calls = g.calls if g else 0
    fig.matching = _matching(g, wanted)

    for dim in DIMENSIONS:
        per_group = group_stats(store.window_rollups(dim, start, end))
        rows = [GroupFigure(name, _matching(s, wanted), s.calls)
                for name, s in per_group.items()]
        rows = [r for r in rows if r.calls]
        rows.sort(key=lambda r: (-r.calls, r.group))
        fig.top[dim] = rows[:top_n]
        if dim == "egress":
            fig.unrouted = max(0, fig.matching - sum(r.calls for r in rows))

    day = 1440
    y = _global(store, start - day, end - day)
    scale = 60.0 / window_min
    fig.baselines.append(BaselineFigure(
        "same hour yesterday" if window_min == 60 else "same time yesterday",
        start - day, end - day, _matching(y, wanted) * scale, (y.calls if y else 0) * scale))
    span = PRECEDING_HOURS * 60
    p = _global(store, start - span, start)
    fig.baselines.append(BaselineFigure(
        f"preceding {PRECEDING_HOURS} h, hourly average", start - span, start,
        _matching(p, wanted) / PRECEDING_HOURS, (p.calls if p else 0) / PRECEDING_HOURS))

    latest = store.latest_minute()
    fig.latest_ms = latest * 60000 if latest is not None else None
    fig.alerts = alerts_on(store, codes_t, now_ms, rules or {})
    fig.watching = [(r.id, _describe(r)) for r, _ in rules_measuring(rules or {}, codes_t)]
    return fig


def _describe(rule: Rule) -> str:
    per = "all traffic" if rule.group_by == "global" else f"per {rule.group_by}"
    return (f"{rule.measure.describe()}, {per}, over {fmt_minutes(rule.window_min)}, "
            f"fires when {rule.threshold_text}")


def rules_measuring(rules: Mapping[str, Rule], codes: Iterable[int]) -> list[tuple[Rule, bool]]:
    """The rules whose measure counts any of `codes`, each with whether it counts
    exactly those codes (True) or a wider set or class (False)."""
    codes = set(codes)
    out = []
    for rule in rules.values():
        sel = rule.measure.selector
        if sel is None or not any(sel.matches(c) for c in codes):
            continue
        exact = sel.kind != "class" and set(sel.values) <= codes
        out.append((rule, exact))
    out.sort(key=lambda rx: (not rx[1], rx[0].id))
    return out


def alerts_on(store: Store, codes: Iterable[int], now_ms: int,
              rules: Mapping[str, Rule]) -> list[AlertFigure]:
    """Alerts firing (then pending) whose rule measures one of `codes`."""
    measuring = {r.id: (r, exact) for r, exact in rules_measuring(rules, codes)}
    if not measuring:
        return []
    silences = store.silences(active_at_ms=now_ms)
    out = []
    for row in store.alerts():
        if row["state"] not in (FIRING, PENDING) or row["rule_id"] not in measuring:
            continue
        rule, exact = measuring[row["rule_id"]]
        grp = row["grp"] or ""
        shown = render(rule, None, grp, row["value"])
        until = [s["ends_ms"] for s in silences
                 if s["rule_id"] in (rule.id, "*") and s["grp"] in (None, grp)]
        out.append(AlertFigure(
            rule_id=rule.id, group=shown["group"], state=row["state"], severity=rule.severity,
            title=shown["title"], measure=shown["measure"], value=shown["value"],
            threshold=rule.threshold_text,
            since_ms=row["fired_ms"] if row["state"] == FIRING else row["active_since_ms"],
            exact=exact, silenced_until_ms=max(until) if until else None))
    out.sort(key=lambda a: (a.state != FIRING, not a.exact, a.rule_id, a.group))
    return out
