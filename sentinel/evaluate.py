"""One evaluation: the window's aggregates become facts, the engine judges them.

`evaluate(store, engine, now_ms)` is a pure read of the store: it returns what
every rule sees for every group, and which of those the rules matched. The
clock is a parameter, so `run`, `replay`, `demo` and the tests share it.

Windows are whole closed minutes ending at the minute that contains `now`:
a window of 5m evaluated at 10:07:30 covers 10:02:00-10:07:00.
"""

from __future__ import annotations

import itertools
import operator
from collections import OrderedDict
from dataclasses import dataclass, field

from .engine import RuleEngine
from .metrics import GroupStats, group_stats
from .rules import Baseline, Rule
from .store import Store

_cycle = itertools.count(1)
GLOBAL_GROUP = ""


@dataclass
class Observation:
    """What one rule saw of one group in one evaluation.

    `values` and `base_values` hold every field the rule's conditions read
    (its measure, "calls", a share's "count_..."), for the window and the
    baseline; `value` and `baseline` are the measure's own.
    """
    rule: Rule
    group: str
    value: float | None
    baseline: float | None
    calls: int
    base_calls: float
    matched: bool
    stats: GroupStats
    values: dict = field(default_factory=dict)
    base_values: dict = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        """Enough data to say yes or no: no data is not recovery."""
        return self.calls >= self.rule.min_calls and self.base_calls >= self.rule.min_baseline_calls


@dataclass
class Evaluation:
    now_ms: int
    window_end_minute: int
    observations: dict[str, dict[str, Observation]] = field(default_factory=dict)  # rule -> group -> obs

    def matched(self) -> list[Observation]:
        return [o for by_group in self.observations.values() for o in by_group.values() if o.matched]


def window_bounds(now_ms: int, window_min: int) -> tuple[int, int]:
    end = now_ms // 60000
    return end - window_min, end


def baseline_bounds(now_ms: int, window_min: int, baseline: Baseline) -> tuple[int, int, float]:
    """(start, end, scale): counts over the baseline are multiplied by scale so
    that they are comparable with counts over the window."""
    start, end = window_bounds(now_ms, window_min)
    if baseline.kind == "yesterday":
        return start - 1440, end - 1440, 1.0
    return start - baseline.minutes, start, window_min / baseline.minutes


class StatsCache:
    """Reads each (dimension, span) once per evaluation, however many rules use it."""

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[tuple[str, int, int], dict[str, GroupStats]] = {}

    def get(self, dim: str, start: int, end: int) -> dict[str, GroupStats]:
        key = (dim, start, end)
        if key not in self._cache:
            self._cache[key] = group_stats(self.store.window_rollups(dim, start, end))
        return self._cache[key]


class SlidingStats(StatsCache):
    """Window sums that slide instead of being re-read, for replays.

    A replay evaluates minute after minute, so each window moves by one
    minute: add the minute that enters, take back the one that leaves. The
    rows of each minute are read once (an hour at a time) however many
    windows use them. The sums equal a fresh read exactly (a test checks it).

    Only for data that no longer changes under the window, as in a replay
    over stored CDRs; the daemon reads fresh sums every cycle. The returned
    group dicts are live: use them before the next `get` of the same window.
    """

    CHUNK = 60          # minutes read at once
    CHUNKS_KEPT = 8     # per dimension: windows, baselines, yesterday

    def __init__(self, store: Store, *, pdd_histogram: bool = True):
        super().__init__(store)
        # Reading the PDD histogram is most of the row: skip it when no rule
        # measures a PDD percentile (those GroupStats then have an empty one).
        self.pdd_histogram = pdd_histogram
        # (dim, length) -> windows of that size: [start, end, groups]
        self._windows: dict[tuple[str, int], list[list]] = {}
        self._chunks: dict[str, OrderedDict[int, dict[int, list]]] = {}

    def _minute(self, dim: str, minute: int) -> dict[str, GroupStats]:
        """The sums of one minute, per group (merged once, used by every window)."""
        chunk = minute // self.CHUNK
        cache = self._chunks.setdefault(dim, OrderedDict())
        minutes = cache.get(chunk)
        if minutes is None:
            first = chunk * self.CHUNK
            minutes = cache[chunk] = self._load(dim, first, first + self.CHUNK - 1)
            while len(cache) > self.CHUNKS_KEPT:
                cache.popitem(last=False)
        else:
            cache.move_to_end(chunk)
        return minutes[minute]

    def _load(self, dim: str, first: int, last: int) -> dict[int, dict[str, GroupStats]]:
        """Per minute, per group, the sums of [first, last], straight from the rows."""
        minutes: dict[int, dict[str, GroupStats]] = {m: {} for m in range(first, last + 1)}
        add = operator.add
        rows = self.store.rollup_tuples(dim, first, last, pdd_histogram=self.pdd_histogram)
        for row in rows:
            m, g, reason, calls, answered, talk, short, pdd_n, pdd_sum = row[:9]
            s = minutes[m].get(g)
            if s is None:
                s = minutes[m][g] = GroupStats()
            s.calls += calls
            s.answered += answered
            s.talk_s += talk
            s.short_calls += short
            if pdd_n:
                s.pdd_n += pdd_n
                s.pdd_sum += pdd_sum
                if self.pdd_histogram:
                    s.pdd_hist = list(map(add, s.pdd_hist, row[9:]))
            s.by_reason[reason] = [calls, answered]
        return minutes

    def get(self, dim: str, start: int, end: int) -> dict[str, GroupStats]:
        length = end - start
        states = self._windows.setdefault((dim, length), [])
        state = next((st for st in states if st[0] <= start <= st[0] + length), None)
        if state is None:
            groups: dict[str, GroupStats] = {}
            self._slide(dim, groups, range(start, end), ())
            state = [start, end, groups]
            states.append(state)
            del states[:-4]
        else:
            self._slide(dim, state[2], range(max(state[1], start), end), range(state[0], start))
            state[0], state[1] = start, end
        return state[2]

    def _slide(self, dim: str, groups: dict[str, GroupStats], entering, leaving) -> None:
        for m in entering:
            for g, o in self._minute(dim, m).items():
                s = groups.get(g)
                if s is None:
                    s = groups[g] = GroupStats()
                s.merge(o)
        for m in leaving:
            for g, o in self._minute(dim, m).items():
                s = groups[g]
                s.merge(o, -1)
                if s.calls == 0:
                    del groups[g]


def evaluate(store: Store, engine: RuleEngine, now_ms: int,
             cache: StatsCache | None = None,
             open_groups: dict[str, set[str]] | None = None,
             every_group: bool = True) -> Evaluation:
    """Judge every rule over its window at `now_ms`.

    `open_groups` (rule id -> groups with a pending or firing alert) are
    judged even when they had no call in the window: for a rule that needs no
    minimum sample, silence from a scanner's IP is a verdict, not a gap.

    With `every_group` False, only groups that pass a rule's candidate gate
    (see engine.candidate_gate) or have an open alert are observed: all the
    alert lifecycle needs, at a fraction of the cost (replays use it).
    """
    cache = cache or StatsCache(store)
    open_groups = open_groups or {}
    cycle = next(_cycle)
    result = Evaluation(now_ms=now_ms, window_end_minute=now_ms // 60000)
    empty = GroupStats()
    for key in engine.fact_keys:
        dim, window_min, baseline = key
        rules = engine.rules_for(key)
        start, end = window_bounds(now_ms, window_min)
        window = cache.get(dim, start, end)
        base: dict[str, GroupStats] = {}
        scale = 1.0
        if baseline is not None:
            b_start, b_end, scale = baseline_bounds(now_ms, window_min, baseline)
            base = cache.get(dim, b_start, b_end)
        groups = set(window) | set(base)
        kept_open: set[str] = set()
        for r in rules:
            kept_open |= open_groups.get(r.id, set())
        groups |= kept_open
        if dim == "global":
            groups.add(GLOBAL_GROUP)
        measures = engine.fields(key)
        gate_fields = engine.gate_fields(key)
        facts = []
        per_group: dict[str, tuple[GroupStats, dict, dict]] = {}
        for g in groups:
            w = window.get(g, empty)
            b = base.get(g) if baseline is not None else None
            if not every_group and g not in kept_open:
                probe = {"calls": w.calls}
                if baseline is not None:
                    probe["base_calls"] = (b.calls if b else 0) * scale
                for f, m in gate_fields:
                    probe[f] = m.value(w)
                if not engine.is_candidate(key, probe):
                    continue
            fact = {"gid": g, "cyc": cycle, "calls": w.calls}
            values: dict = {"calls": w.calls}
            base_values: dict = {}
            if baseline is not None:
                base_values["calls"] = fact["base_calls"] = (b.calls if b else 0) * scale
            for fname, m in measures.items():
                v = m.value(w)
                values[fname] = v
                if v is not None:
                    fact[fname] = v
                if baseline is not None:
                    bv = m.value(b) if b else (0.0 if m.is_count else None)
                    if bv is not None and m.is_count:
                        bv *= scale
                    base_values[fname] = bv
                    if bv is not None:
                        fact["base_" + fname] = bv
            facts.append(fact)
            per_group[g] = (w, values, base_values)
        matched = set(engine.judge(key, facts))
        for r in rules:
            by_group = result.observations.setdefault(r.id, {})
            f = r.measure.field
            for g, (w, values, base_values) in per_group.items():
                by_group[g] = Observation(
                    rule=r, group=g, value=values[f], baseline=base_values.get(f),
                    calls=w.calls, base_calls=base_values.get("calls", 0.0),
                    matched=(r.id, g) in matched, stats=w, values=values,
                    base_values=base_values)
    return result
