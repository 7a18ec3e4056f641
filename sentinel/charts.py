"""PNG charts of a rule's measure: what an engineer on a phone would rather
look at than read.

A chart shows the last few hours (3 by default) of the measure a rule judges,
for the groups that alert, with the rule's thresholds as lines and the firing
period shaded. The series is computed the way evaluation computes it, from
the store's rollups with the rule's own `Measure` and `group_stats`: each
point is the measure over the rule's window ending at that point, so the line
crosses the threshold exactly where the alert fired. Nothing here computes a
KPI of its own.

Rendering uses matplotlib's object API (`Figure` + the Agg canvas) and never
pyplot: pyplot keeps global figure state, is not thread-safe, and may try to
open a window; a `Figure` drawn on the Agg canvas is off-screen by
construction and is garbage-collected like any object.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")          # off-screen, even if a caller later imports pyplot

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.dates import DateFormatter  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .evaluate import GLOBAL_GROUP, baseline_bounds, window_bounds  # noqa: E402
from .metrics import GroupStats, group_stats  # noqa: E402
from .rules import Rule  # noqa: E402
from .store import DIMENSIONS, Store  # noqa: E402

DEFAULT_HOURS = 3.0
DEFAULT_STEP_MIN = 5
MAX_LINES = 5                   # more groups than this make an unreadable chart
_UNIT_LABELS = {"%": "%", "s": "seconds", "": "calls", "min": "minutes"}
_FIRING_COLOUR = "#d62728"


@dataclass
class Threshold:
    """A line to draw: constant (`value`) or following the baseline (`values`)."""
    label: str
    value: float | None = None
    values: list[float | None] = field(default_factory=list)
    resolve: bool = False       # a resolve_when line, drawn fainter


@dataclass
class MetricChart:
    """Everything one chart shows, already computed: render it with `render_png`."""
    title: str
    unit: str
    times_ms: list[int]
    lines: dict[str, list[float | None]]           # label -> one value per time
    thresholds: list[Threshold] = field(default_factory=list)
    firing: list[tuple[int, int]] = field(default_factory=list)   # shaded spans (ms)


def chartable(rule: Rule | None) -> bool:
    """Charts need a rule whose groups live in the rollups (not source health)."""
    return rule is not None and rule.group_by in DIMENSIONS


def sample_times(end_ms: int, hours: float = DEFAULT_HOURS,
                 step_min: int = DEFAULT_STEP_MIN) -> list[int]:
    """Points every `step_min` minutes over the last `hours`, ending at `end_ms`."""
    step = step_min * 60000
    n = max(1, int(hours * 60 // step_min))
    return [end_ms - k * step for k in range(n, -1, -1)]


def measure_series(store: Store, rule: Rule, groups: list[str],
                   times_ms: list[int]) -> dict[str, list[float | None]]:
    """The rule's measure for each group at each time, over the rule's window
    ending there (as evaluation computes it)."""
    out: dict[str, list[float | None]] = {g: [] for g in groups}
    empty = GroupStats()
    for t in times_ms:
        start, end = window_bounds(t, rule.window_min)
        stats = group_stats(store.window_rollups(rule.group_by, start, end))
        for g in groups:
            out[g].append(rule.measure.value(stats.get(g, empty)))
    return out


def baseline_series(store: Store, rule: Rule, group: str,
                    times_ms: list[int]) -> list[float | None]:
    """The rule's baseline value at each time, scaled as evaluation scales it."""
    if rule.baseline is None:
        return [None] * len(times_ms)
    m = rule.measure
    out: list[float | None] = []
    for t in times_ms:
        b_start, b_end, scale = baseline_bounds(t, rule.window_min, rule.baseline)
        stats = group_stats(store.window_rollups(rule.group_by, b_start, b_end)).get(group)
        value = m.value(stats) if stats else (0.0 if m.is_count else None)
        if value is not None and m.is_count:
            value *= scale
        out.append(value)
    return out


def rule_thresholds(store: Store, rule: Rule, group: str, times_ms: list[int]) -> list[Threshold]:
    """One line per clause of fire_when (and resolve_when) on the measure
    itself: constant for a plain number, following the baseline for "3x
    baseline". Clauses on another quantity ("and count >= 10") are on
    another scale and are not drawn."""
    lines: list[Threshold] = []
    base: list[float | None] | None = None
    clause_sets = [(rule.clauses, "fires when", False)]
    if rule.resolve_clauses:
        clause_sets.append((rule.resolve_clauses, "resolves when", True))
    for clauses, word, resolve in clause_sets:
        for c in clauses:
            if c.subject:
                continue
            number = f"{c.number:g}"
            if c.relative:
                if base is None:
                    base = baseline_series(store, rule, group, times_ms)
                lines.append(Threshold(f"{word} {c.op} {number}x baseline",
                                       values=[None if b is None else c.number * b for b in base],
                                       resolve=resolve))
            else:
                unit = rule.measure.unit if rule.measure.unit in ("%", "s") else ""
                lines.append(Threshold(f"{word} {c.op} {number}{unit}", value=c.number,
                                       resolve=resolve))
    return lines


def alert_chart(store: Store, rule: Rule, groups: list[str], *, end_ms: int,
                fired_ms: int | None, resolved_ms: int | None = None,
                hours: float = DEFAULT_HOURS, step_min: int = DEFAULT_STEP_MIN) -> MetricChart:
    """The chart of an alert: its groups (worst first, at most MAX_LINES),
    the rule's thresholds for the first of them, the firing period shaded."""
    groups = list(groups)[:MAX_LINES]
    times = sample_times(end_ms, hours, step_min)
    series = measure_series(store, rule, groups, times)
    lines = {group_name(rule, g): v for g, v in series.items()}
    where = group_name(rule, groups[0]) if len(groups) == 1 else f"{len(groups)} worst groups"
    firing = []
    if fired_ms is not None:
        firing.append((max(fired_ms, times[0]), resolved_ms or end_ms))
    return MetricChart(title=f"{rule.measure.describe()}: {where}, last {hours:g} h",
                       unit=rule.measure.unit, times_ms=times, lines=lines,
                       thresholds=rule_thresholds(store, rule, groups[0], times),
                       firing=firing)


def group_name(rule: Rule, group: str) -> str:
    return "all traffic" if rule.group_by == "global" or group == GLOBAL_GROUP else group


def _plain(text: str, limit: int = 60) -> str:
    """Text as matplotlib should print it: `$` would start mathtext (and a
    hostile gateway name could make the parser fail), long names are cut."""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def render_png(chart: MetricChart, tz: ZoneInfo, *, width_in: float = 8.0,
               height_in: float = 3.6, dpi: int = 100) -> bytes:
    """The chart as PNG bytes, times in the operator's time zone."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    when = [datetime.fromtimestamp(t / 1000, timezone.utc) for t in chart.times_ms]
    for label, values in chart.lines.items():
        ax.plot(when, [math.nan if v is None else v for v in values], linewidth=1.8,
                marker="o", markersize=2.5, label=_plain(label))
    for th in chart.thresholds:
        style = dict(color=_FIRING_COLOUR, linewidth=1.2, alpha=0.5 if th.resolve else 0.9,
                     linestyle=":" if th.resolve else "--", label=_plain(th.label))
        if th.value is not None:
            ax.axhline(th.value, **style)
        else:
            ax.plot(when, [math.nan if v is None else v for v in th.values], **style)
    # A margin of half a step on the right: an alert that fires now shows a
    # band at the edge (still firing) rather than a shading of zero width.
    step = chart.times_ms[1] - chart.times_ms[0] if len(chart.times_ms) > 1 else 300_000
    right_ms = chart.times_ms[-1] + step // 2
    for i, (start, end) in enumerate(chart.firing):
        end = right_ms if end >= chart.times_ms[-1] else end
        ax.axvspan(datetime.fromtimestamp(start / 1000, timezone.utc),
                   datetime.fromtimestamp(end / 1000, timezone.utc),
                   color=_FIRING_COLOUR, alpha=0.12, label="firing" if i == 0 else None)
    ax.set_title(_plain(chart.title, 90), fontsize=11, loc="left")
    ax.set_ylabel(_UNIT_LABELS.get(chart.unit, chart.unit))
    ax.set_ylim(bottom=0)
    ax.set_xlim(when[0], datetime.fromtimestamp(right_ms / 1000, timezone.utc))
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=tz))
    ax.set_xlabel(str(tz))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
