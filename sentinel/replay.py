"""Replay: evaluate the rules over stored CDRs as `run` would have, step by step.

The alert state of a replay lives in a scratch in-memory store, so replaying
never touches the live alerts or sends anything. The same `evaluate` and
`AlertManager` as the daemon do the work, so a replay raises what `run` would
have raised over the same CDRs. `Replayer` is the loop; `sentinel replay`,
`sentinel test` and the tuning report drive it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .alerts import FIRING, AlertManager, AlertState
from .engine import RuleEngine
from .evaluate import SlidingStats, evaluate
from .rulebook import RuleBook
from .rules import Rule
from .store import Store


class Replayer:
    """Steps a rule set over a store's CDRs with a simulated clock."""

    def __init__(self, store: Store, rules: list[Rule], silences: list[dict] = ()):
        self.store = store
        self.engine = RuleEngine(rules)
        self.scratch = Store(":memory:")
        for s in silences:
            self.scratch.add_silence(s["rule_id"], s.get("grp"), s["starts_ms"], s["ends_ms"],
                                     s.get("reason", "test"), s.get("created_by", "test"))
        self.manager = AlertManager(self.scratch)
        self.cache = SlidingStats(store, pdd_histogram=any(
            r.measure.kpi == "pdd_p95" for r in rules))
        self.episodes: list[Episode] = []
        self._open: dict[tuple[str, str], Episode] = {}

    def step(self, now_ms: int) -> list[dict]:
        """One evaluation at `now_ms`: the notifications it recorded."""
        ev = evaluate(self.store, self.engine, now_ms, self.cache,
                      open_groups=self.manager.open_groups(), every_group=False)
        notes = self.manager.apply(ev, self.engine.rules)
        self._track(now_ms)
        return notes

    def _track(self, now_ms: int) -> None:
        """Firing episodes, from state changes (announced or held back alike)."""
        firing = {(a.rule_id, a.group) for a in self.firing()}
        for key in firing - set(self._open):
            ep = Episode(key[0], key[1], now_ms, None)
            self._open[key] = ep
            self.episodes.append(ep)
        for key in set(self._open) - firing:
            self._open.pop(key).resolved_ms = now_ms

    def firing(self) -> list[AlertState]:
        return sorted((a for a in self.manager.current().values() if a.state == FIRING),
                      key=lambda a: (a.rule_id, a.group))

    def close(self) -> None:
        self.engine.close()
        self.scratch.close()


def load_rule_list(rules: str | Path) -> list[Rule]:
    book = RuleBook(rules)
    book.refresh()
    out = list(book.rules.values())
    book.engine.close()
    return out


def replay_notifications(store: Store, rules: str | Path | list[Rule], start_ms: int,
                         end_ms: int, step_s: int = 60,
                         progress: Callable[[int, int], None] | None = None) -> Iterator[dict]:
    """Yield every notification the rules would have produced, in time order,
    those held back included (with `suppressed` saying why)."""
    rule_list = rules if isinstance(rules, list) else load_rule_list(rules)
    r = Replayer(store, rule_list)
    step_ms = step_s * 1000
    total = max(1, (end_ms - start_ms) // step_ms + 1)
    try:
        for i, t in enumerate(range(start_ms, end_ms + 1, step_ms)):
            yield from r.step(t)
            if progress and i % 60 == 0:
                progress(i, total)
    finally:
        r.close()


def replay(store: Store, rules: str | Path | list[Rule], start_ms: int, end_ms: int,
           step_s: int = 60, progress=None) -> list[dict]:
    """Alert events (firing, resolved...) as plain dicts, for printing or JSON."""
    return [{
        "at_ms": n["created_ms"], "kind": n["kind"], "rule_id": n["rule_id"],
        "group": n["grp"], "severity": n["payload"].get("severity"),
        "value": n["payload"].get("value"), "title": n["payload"].get("title"),
        "suppressed": n.get("suppressed"),
    } for n in replay_notifications(store, rules, start_ms, end_ms, step_s, progress)]


# -- tuning: what alerts a rule set raises, and what a change would do -----------

@dataclass
class Episode:
    """One stretch of an alert firing."""
    rule_id: str
    group: str
    fired_ms: int
    resolved_ms: int | None       # None: still firing at the end

    def minutes(self, end_ms: int) -> float:
        return ((self.resolved_ms or end_ms) - self.fired_ms) / 60000


@dataclass
class RuleSummary:
    rule_id: str
    episodes: list[Episode] = field(default_factory=list)

    def firing_minutes(self, end_ms: int) -> float:
        return sum(e.minutes(end_ms) for e in self.episodes)

    def groups(self) -> list[str]:
        return sorted({e.group for e in self.episodes})


def backtest(store: Store, rules: list[Rule], start_ms: int, end_ms: int, step_s: int = 60,
             progress: Callable[[int, int], None] | None = None,
             workers: int = 1) -> dict[str, RuleSummary]:
    """Per rule, the firing episodes the rules would have had over the period.

    With `workers` > 1 (and a store in a file), the period is cut into that
    many segments replayed in parallel processes. Each segment starts a
    warm-up early (`warmup_ms`) so its alerts are in the state a continuous
    replay would have them in; episodes are stitched across the cuts. The
    result equals a single pass (the replay benchmark checks it).
    """
    if workers > 1 and store.path != ":memory:" and end_ms - start_ms > 2 * warmup_ms(rules):
        return _parallel_backtest(store.path, rules, start_ms, end_ms, step_s, workers)
    episodes = _replay_segment(store, rules, start_ms, end_ms, step_s, progress)
    return _summaries(rules, episodes)


def warmup_ms(rules: list[Rule]) -> int:
    """How far back a segment must start for its alerts to be in the state a
    continuous replay would have them in: the longest a rule looks back
    (window, preceding baseline, `for`, `keep_firing_for`), plus the hour of
    history flapping detection keeps."""
    longest = max((r.window_min + (r.baseline.minutes if r.baseline else 0) + r.for_min
                   + r.keep_firing_min for r in rules), default=0)
    return (longest + 60 + 5) * 60000


def _replay_segment(store: Store, rules: list[Rule], start_ms: int, end_ms: int, step_s: int,
                    progress: Callable[[int, int], None] | None = None) -> list[Episode]:
    r = Replayer(store, rules)
    step_ms = step_s * 1000
    total = max(1, (end_ms - start_ms) // step_ms + 1)
    try:
        for i, t in enumerate(range(start_ms, end_ms + 1, step_ms)):
            r.step(t)
            if progress and i % 60 == 0:
                progress(i, total)
        return r.episodes
    finally:
        r.close()


def _segment_worker(args) -> list[Episode]:
    path, rules, warm_from, seg_start, seg_end, step_s = args
    store = Store(path)
    try:
        eps = _replay_segment(store, rules, warm_from, seg_end, step_s)
    finally:
        store.close()
    # What this segment says about itself: episodes firing at its start
    # (begun in the warm-up) and those begun within it.
    return [e for e in eps if e.resolved_ms is None or e.resolved_ms >= seg_start]


def _parallel_backtest(path: str, rules: list[Rule], start_ms: int, end_ms: int, step_s: int,
                       workers: int) -> dict[str, RuleSummary]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    step_ms = step_s * 1000
    span = (end_ms - start_ms) // workers // step_ms * step_ms
    cuts = [start_ms + i * span for i in range(workers)] + [end_ms + step_ms]
    jobs = []
    for i in range(workers):
        seg_start, seg_end = cuts[i], cuts[i + 1] - step_ms
        warm_from = start_ms if i == 0 else max(start_ms, seg_start - warmup_ms(rules))
        # keep the warm-up on the same step grid as a single pass
        warm_from = start_ms + (warm_from - start_ms) // step_ms * step_ms
        jobs.append((path, rules, warm_from, seg_start, seg_end, step_s))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        parts = list(pool.map(_segment_worker, jobs))
    episodes: list[Episode] = []
    open_at_cut: dict[tuple[str, str], Episode] = {}
    for i, part in enumerate(parts):
        seg_start = cuts[i]
        for e in part:
            key = (e.rule_id, e.group)
            if i and e.fired_ms < seg_start:
                # Begun before the cut: the previous segment has it open.
                prev = open_at_cut.get(key)
                if prev is not None:
                    prev.resolved_ms = e.resolved_ms
                    if e.resolved_ms is None:
                        open_at_cut[key] = prev
                    else:
                        open_at_cut.pop(key)
                continue
            episodes.append(e)
        open_at_cut = {k: v for k, v in open_at_cut.items() if v.resolved_ms is None}
        for e in episodes:
            if e.resolved_ms is None:
                open_at_cut[(e.rule_id, e.group)] = e
    return _summaries(rules, episodes)


def _summaries(rules: list[Rule], episodes: list[Episode]) -> dict[str, RuleSummary]:
    out = {rule.id: RuleSummary(rule.id) for rule in rules}
    for ep in sorted(episodes, key=lambda e: (e.fired_ms, e.rule_id, e.group)):
        out[ep.rule_id].episodes.append(ep)
    return out


def print_progress(done: int, total: int) -> None:
    print(f"\rreplaying: {100 * done // total:3d}%", end="", file=sys.stderr, flush=True)
