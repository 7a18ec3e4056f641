"""Source health: a built-in alert per source that stops delivering.

A source whose pulls fail (database down, folder gone, API refusing) for longer
than its `alert_after` raises `source-health` on that source. While any source
is failing, every rule alert is held where it is: the windows are missing
data, and no data is not recovery. It goes through the same lifecycle and
notification stages as rule alerts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .evaluate import Observation
from .metrics import GroupStats, Measure
from .rules import Clause, Rule

DEFAULT_ALERT_AFTER_S = 300
RULE_ID = "source-health"


@dataclass(frozen=True)
class _DownMinutes(Measure):
    @property
    def field(self) -> str:
        return "minutes_down"

    @property
    def unit(self) -> str:
        return "min"

    def describe(self) -> str:
        return "minutes without a successful pull"


def health_rule(alert_after_s: int = DEFAULT_ALERT_AFTER_S) -> Rule:
    minutes = max(1, alert_after_s // 60)
    return Rule(
        id=RULE_ID, file="(built in)", title="CDR source {group} is not delivering",
        severity="critical", group_by="source", window_min=minutes, measure=_DownMinutes(),
        clauses=(Clause(">=", float(minutes)),), fire_when=f">= {minutes} min", min_calls=0,
        min_baseline_calls=0, baseline=None, for_min=0,
        diagnosis=("Sentinel has not read CDRs from {group} for {value}. Alerts fed by it are "
                   "held where they are (no data is not recovery) until it delivers again."),
        fixes=("Check that the VOS3000 database, export folder or Web API is reachable from Sentinel",
               "Look at the source's last error with `sentinel status`",
               "Check credentials and permissions of Sentinel's read-only account"),
        inhibits=("*",))


def health_observations(status_rows: list[dict], now_ms: int) -> dict[str, Observation]:
    """One observation per source, for the source-health rule."""
    out = {}
    for row in status_rows:
        rule = health_rule(row["alert_after_s"] or DEFAULT_ALERT_AFTER_S)
        since = row["failing_since_ms"]
        down_min = (now_ms - since) / 60000 if since is not None else 0.0
        out[row["source"]] = Observation(
            rule=rule, group=row["source"], value=round(down_min, 1), baseline=None,
            calls=0, base_calls=0, matched=since is not None and rule.clauses[0].holds(down_min, None),
            stats=GroupStats(), values={"minutes_down": down_min, "calls": 0})
    return out


def failing_sources(status_rows: list[dict]) -> list[str]:
    return [r["source"] for r in status_rows if r["failing_since_ms"] is not None]
