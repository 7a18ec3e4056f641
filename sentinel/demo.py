"""`sentinel demo`: a few hours of a carrier's traffic, with incidents, in seconds.

The demo runs the real pipeline minute by minute on a simulated clock: the
demo source delivers the calls that ended in each minute, the store takes
them, the rules judge the window, alerts print as they fire and resolve. At the
end it checks what it caught against the incidents it injected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TextIO

from .alerts import delivered
from .app import Sentinel
from .config import Config
from .notifiers import build_notifier
from .notifiers.terminal import fmt_time
from .sources.demo import DEFAULT_INCIDENTS, DemoSource, DemoTraffic, Incident
from .store import Store

# A fixed start keeps the demo the same from run to run.
DEMO_START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)
WARMUP_MIN = 15

# The rule each incident should raise, and on which group ("" = all traffic).
EXPECTED = {
    "vendor-503-storm": "sip-503-share",
    "balance-exhausted": "balance-insufficient-spike",
    "codec-mismatch": "sip-488-codec",
    "asr-collapse": "sip-200-low",
    "unauthorized-scan": "unauthorized-ip",
    "source-silent": "no-cdrs",
}
GRACE_MIN = 15   # an alert may fire up to this long after its incident began


@dataclass
class DemoSummary:
    caught: dict[str, list[dict]] = field(default_factory=dict)   # incident -> alerts
    missed: list[str] = field(default_factory=list)
    unexplained: list[dict] = field(default_factory=list)
    firings: list[dict] = field(default_factory=list)
    cdrs: int = 0
    seconds: float = 0.0

    @property
    def all_caught(self) -> bool:
        return not self.missed and not self.unexplained


def explain(firing: dict, incidents: tuple[Incident, ...], start_ms: int) -> Incident | None:
    """The incident that accounts for a firing alert, if any."""
    minute = (firing["created_ms"] - start_ms) // 60000
    for inc in incidents:
        if not inc.start_min <= minute <= inc.end_min + GRACE_MIN:
            continue
        if inc.target == "" or firing["grp"] == inc.target:
            return inc
    return None


def run_demo(cfg: Config, *, hours: float = 5.0, out: TextIO, store_path: str | None = None,
             start: datetime = DEMO_START, incidents: tuple[Incident, ...] = DEFAULT_INCIDENTS,
             calls_per_minute: int = 250, seed: int = 7) -> DemoSummary:
    t0 = time.perf_counter()
    start_ms = int(start.timestamp() * 1000)
    end_ms = start_ms + int(hours * 3600_000)
    traffic = DemoTraffic(start_ms, seed=seed, calls_per_minute=calls_per_minute,
                          incidents=incidents)
    store = Store(store_path or ":memory:")
    app = Sentinel(cfg, store=store, sources=[DemoSource("demo", traffic)], notifiers=[])
    app.notifiers = [build_notifier(cfg, out, store=store,
                                    rules_provider=lambda: app.rulebook.rules)]
    print(f"Sentinel demo: {hours:g} hours of VOS3000 traffic from {fmt_time(start_ms, cfg.tz)}, "
          f"about {calls_per_minute} calls a minute, rules from {cfg.rules}.", file=out)
    print("Injected incidents (minutes from the start):", file=out)
    for inc in incidents:
        print(f"  {inc.start_min:>4}-{inc.end_min:<4} {inc.name}: {inc.description}", file=out)
    print(file=out)

    summary = DemoSummary()
    for t in range(start_ms + 60000, end_ms + 1, 60000):
        report = app.cycle(t, pull=True) if t >= start_ms + WARMUP_MIN * 60000 else None
        if report is None:
            app.pull(t, _quiet_report(t))
            continue
        for n in delivered(report.notifications):
            if n["kind"] == "firing":
                summary.firings.append(n)
    summary.cdrs = store.count_cdrs()
    for n in summary.firings:
        inc = explain(n, incidents, start_ms)
        if inc is None:
            summary.unexplained.append(n)
        else:
            summary.caught.setdefault(inc.name, []).append(n)
    for inc in incidents:
        want = EXPECTED.get(inc.name)
        got = [n for n in summary.caught.get(inc.name, []) if n["rule_id"] == want]
        if want and not got:
            summary.missed.append(inc.name)
    summary.seconds = time.perf_counter() - t0
    _print_summary(summary, incidents, out)
    app.rulebook.engine.close()
    return summary


def _quiet_report(t: int):
    from .app import CycleReport
    return CycleReport(t)


def _print_summary(s: DemoSummary, incidents, out: TextIO) -> None:
    print("=" * 72, file=out)
    print(f"Demo done: {s.cdrs} CDRs in {s.seconds:.1f} s. What Sentinel caught:", file=out)
    for inc in incidents:
        alerts = s.caught.get(inc.name, [])
        names = sorted({f"{n['rule_id']} on {n['grp'] or 'all traffic'}" for n in alerts})
        mark = "MISSED" if inc.name in s.missed else "caught"
        print(f"  {mark:7} {inc.name:20} {'; '.join(names) or '-'}", file=out)
    if s.unexplained:
        print(f"  {len(s.unexplained)} alerts outside the incidents:", file=out)
        for n in s.unexplained:
            print(f"    {n['rule_id']} on {n['grp'] or 'all traffic'}", file=out)
    else:
        print("  No alert outside the incidents: the healthy stretches stayed quiet.", file=out)
