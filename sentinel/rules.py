"""Rule files: TOML that a NOC engineer reads and edits without knowing Python.

A file holds any number of `[[rule]]` tables:

    [[rule]]
    id = "sip-503-share"
    title = "503 storm on vendor {group}"
    severity = "critical"
    group_by = "egress"               # global, egress, ingress, account, prefix, caller_ip
    window = "5m"
    measure = "share of sip 503"      # or "count of reason 8", "share of class 5xx", "asr"...
    fire_when = "> 10%"               # or "> 3x baseline and >= 20", "== 0"
    min_calls = 30
    diagnosis = "{value} of calls to {group} ended 503 (threshold {threshold})."
    fixes = ["Move traffic to another vendor", "Ask {group} about capacity"]

Each file is parsed on its own: a broken file is reported (file, line, rule,
field) and the other files keep running. The parsed rules compile into
durable_rules rulesets in `engine.py`.
"""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import KPIS, Measure, Selector
from .store import DIMENSIONS

SEVERITIES = ("critical", "warning", "info")
KNOWN_FIELDS = {
    "id", "title", "severity", "group_by", "window", "measure", "fire_when",
    "resolve_when", "min_calls", "min_baseline_calls", "baseline", "for",
    "keep_firing_for", "repeat_interval", "inhibits", "diagnosis", "fixes", "enabled",
}
DEFAULT_REPEAT_MIN = 240
TEMPLATE_FIELDS = {"group", "dimension", "value", "threshold", "baseline", "calls",
                   "window", "rule", "measure"}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(m|min|h|d)\s*$")
_CLAUSE_RE = re.compile(
    r"^\s*(count|calls)?\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*(%|s|x\s*baseline)?\s*$")


class RuleError(Exception):
    """A problem in a rule file, located as precisely as we can."""

    def __init__(self, file: str, message: str, *, line: int | None = None,
                 rule: str | None = None, field: str | None = None):
        self.file, self.line, self.rule, self.field = file, line, rule, field
        self.message = message
        where = file + (f":{line}" if line else "")
        parts = [where]
        if rule:
            parts.append(f"rule {rule!r}")
        if field:
            parts.append(f"field {field!r}")
        super().__init__(", ".join(parts) + ": " + message)


@dataclass(frozen=True)
class Clause:
    op: str                  # >, >=, <, <=, ==, !=
    number: float            # threshold, or factor of the baseline
    relative: bool = False   # number x baseline
    subject: str = ""        # "" the rule's measure; "count" its count; "calls" all calls

    def field(self, measure: Measure) -> str:
        """The fact field this clause compares."""
        if self.subject == "calls":
            return "calls"
        if self.subject == "count":
            return Measure(op="count", selector=measure.selector).field
        return measure.field

    def holds(self, value: float, baseline: float | None) -> bool:
        rhs = self.number * (baseline or 0.0) if self.relative else self.number
        return {">": value > rhs, ">=": value >= rhs, "<": value < rhs,
                "<=": value <= rhs, "==": value == rhs, "!=": value != rhs}[self.op]


@dataclass(frozen=True)
class Baseline:
    kind: str                # "preceding" or "yesterday"
    minutes: int             # span of the baseline for "preceding"

    def describe(self) -> str:
        return "same time yesterday" if self.kind == "yesterday" else f"preceding {fmt_minutes(self.minutes)}"


@dataclass(frozen=True)
class Rule:
    id: str
    file: str
    title: str
    severity: str
    group_by: str
    window_min: int
    measure: Measure
    clauses: tuple[Clause, ...]
    fire_when: str
    min_calls: int
    min_baseline_calls: int
    baseline: Baseline | None
    for_min: int
    diagnosis: str
    fixes: tuple[str, ...]
    line: int | None = None                              # its [[rule]] line
    id_line: int | None = None                           # its `id =` line
    resolve_clauses: tuple[Clause, ...] | None = None   # hysteresis; None: not fire_when
    resolve_when: str | None = None
    keep_firing_min: int = 0
    repeat_min: int = DEFAULT_REPEAT_MIN
    inhibits: tuple[str, ...] = ()                      # rule ids, or "*" for all

    def clause_fields(self) -> set[str]:
        """Every fact field the rule's conditions read."""
        return {c.field(self.measure) for c in self.clauses + (self.resolve_clauses or ())}

    def holds(self, clauses: tuple[Clause, ...], values: dict, base_values: dict) -> bool | None:
        """Do all clauses hold for these values? None when a value is missing."""
        for c in clauses:
            f = c.field(self.measure)
            v = values.get(f)
            if v is None:
                return None
            if not c.holds(v, base_values.get(f)):
                return False
        return True

    def still_bad(self, values: dict, base_values: dict) -> bool:
        """While firing: does the condition still hold? With `resolve_when`
        the alert resolves only when that holds (hysteresis)."""
        if self.resolve_clauses is not None:
            ok = self.holds(self.resolve_clauses, values, base_values)
            return ok is not True
        return self.holds(self.clauses, values, base_values) is not False

    def inhibits_rule(self, other: "Rule") -> bool:
        return other.id != self.id and ("*" in self.inhibits or other.id in self.inhibits)

    @property
    def fact_key(self) -> tuple:
        """Rules with the same key are judged on the same facts."""
        return (self.group_by, self.window_min, self.baseline)

    @property
    def threshold_text(self) -> str:
        return self.fire_when.strip()


def fmt_minutes(m: int) -> str:
    if m % 1440 == 0:
        return f"{m // 1440}d"
    if m % 60 == 0:
        return f"{m // 60}h"
    return f"{m}m"


def parse_duration(text: Any, *, allow_zero: bool = False) -> int:
    """'5m', '1h', '2d' -> minutes. Windows and baselines cannot be empty."""
    if not isinstance(text, str):
        raise ValueError("expected a duration such as \"5m\" or \"1h\"")
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"expected a duration such as \"5m\" or \"1h\", got {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    if n == 0 and not allow_zero:
        raise ValueError(f"must be longer than zero, got {text!r}")
    return n * {"m": 1, "min": 1, "h": 60, "d": 1440}[unit]


def parse_optional_duration(text: Any) -> int:
    return parse_duration(text, allow_zero=True)


def parse_measure(text: Any) -> Measure:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected a measure such as \"share of sip 503\" or \"asr\"")
    words = text.lower().replace(",", " ").split()
    if len(words) == 1:
        if words[0] not in KPIS:
            raise ValueError(f"unknown measure {text!r}; KPIs are {', '.join(KPIS)}; "
                             "or write \"share of sip 503\", \"count of reason 8\"")
        return Measure(kpi=words[0])
    if len(words) < 4 or words[0] not in ("share", "count") or words[1] != "of":
        raise ValueError(f"expected \"share of ...\" or \"count of ...\", got {text!r}")
    kind, raw = words[2], words[3:]
    if kind in ("sip", "code", "codes"):
        kind = "sip"
    elif kind in ("reason", "reasons", "endreason", "end_reason"):
        kind = "reason"
    elif kind != "class":
        raise ValueError(f"after \"{words[0]} of\" write sip, class or reason, got {kind!r}")
    values: list[int] = []
    for w in raw:
        if kind == "class":
            if not re.fullmatch(r"[1-6]xx", w):
                raise ValueError(f"a class is written 1xx to 6xx, got {w!r}")
            values.append(int(w[0]))
            continue
        try:
            v = int(w)
        except ValueError:
            raise ValueError(f"{w!r} is not a code number") from None
        if kind == "sip" and not 100 <= v <= 699:
            raise ValueError(f"SIP codes are 100-699, got {v}; "
                             "VOS end reasons are written \"reason N\"")
        values.append(v)
    return Measure(op=words[0], selector=Selector(kind, tuple(values)))


def parse_condition(text: Any) -> tuple[Clause, ...]:
    """'> 10%', '> 3x baseline and >= 20', '> 10% and count >= 10', '== 0'.

    A clause compares the rule's measure, unless it starts with `count` (the
    number of calls counted by a share: "at least 10 of them") or `calls`
    (all calls of the group).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected a condition such as \"> 10%\" or \"> 3x baseline and >= 20\"")
    clauses = []
    for part in re.split(r"\band\b", text):
        m = _CLAUSE_RE.match(part)
        if not m:
            raise ValueError(f"cannot read {part.strip()!r}: write OP NUMBER, e.g. \"> 10%\", "
                             "\"< 2.5s\", \"> 3x baseline\", \"count >= 10\"; "
                             "join clauses with \"and\"")
        subject, op, num, suffix = m.group(1) or "", m.group(2), float(m.group(3)), (m.group(4) or "")
        clauses.append(Clause(op, num, relative=suffix.replace(" ", "") == "xbaseline",
                              subject=subject))
    return tuple(clauses)


def parse_baseline(text: Any) -> Baseline:
    if not isinstance(text, str):
        raise ValueError("expected \"preceding 1h\" or \"yesterday\"")
    t = text.strip().lower()
    if t in ("yesterday", "same time yesterday"):
        return Baseline("yesterday", 0)
    if t.startswith("preceding "):
        return Baseline("preceding", parse_duration(t[len("preceding "):]))
    raise ValueError(f"expected \"preceding 1h\" or \"yesterday\", got {text!r}")


def _check_template(text: str) -> None:
    for _, name, _, _ in string.Formatter().parse(text):
        if name is not None and name not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown placeholder {{{name}}}; use "
                             + ", ".join("{%s}" % f for f in sorted(TEMPLATE_FIELDS)))


class _Locator:
    """Finds the line of a rule and of its fields in the file's text.

    tomllib gives no positions; rules are `[[rule]]` blocks, so the n-th block
    header and the first `key =` line inside it are what a user wants to see.
    """

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.starts = [i for i, ln in enumerate(self.lines)
                       if re.match(r"^\s*\[\[\s*rule\s*\]\]", ln)]

    def rule_line(self, index: int) -> int | None:
        return self.starts[index] + 1 if index < len(self.starts) else None

    def field_line(self, index: int, key: str) -> int | None:
        if index >= len(self.starts):
            return None
        end = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.lines)
        pat = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(self.starts[index], end):
            if pat.match(self.lines[i]):
                return i + 1
        return self.rule_line(index)


def parse_rule(raw: dict, file: str, index: int, loc: _Locator) -> Rule | None:
    rid = raw.get("id")
    rid_text = rid if isinstance(rid, str) else None

    def err(field: str, msg: str) -> RuleError:
        return RuleError(file, msg, line=loc.field_line(index, field),
                         rule=rid_text or f"#{index + 1}", field=field)

    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise err("id", "every rule needs an id: lower-case letters, digits, '-', '_' or '.'")
    unknown = set(raw) - KNOWN_FIELDS
    if unknown:
        f = sorted(unknown)[0]
        raise err(f, f"unknown field; known fields are {', '.join(sorted(KNOWN_FIELDS))}")
    if raw.get("enabled", True) is False:
        return None

    def need_str(key: str) -> str:
        v = raw.get(key)
        if not isinstance(v, str) or not v.strip():
            raise err(key, "is required and must be text")
        return v

    def get(key, parser, default=None):
        if key not in raw:
            if default is not None or key in ("baseline",):
                return default
            raise err(key, "is required")
        try:
            return parser(raw[key])
        except ValueError as e:
            raise err(key, str(e)) from None

    title = need_str("title")
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        raise err("severity", f"must be one of {', '.join(SEVERITIES)}")
    group_by = raw.get("group_by", "global")
    if group_by not in DIMENSIONS:
        raise err("group_by", f"must be one of {', '.join(DIMENSIONS)}")
    window = get("window", parse_duration)
    measure = get("measure", parse_measure)
    clauses = get("fire_when", parse_condition)
    baseline = get("baseline", parse_baseline)
    resolve_clauses = get("resolve_when", parse_condition) if "resolve_when" in raw else None
    for key, cl in (("fire_when", clauses), ("resolve_when", resolve_clauses or ())):
        if any(c.relative for c in cl) and baseline is None:
            raise err(key, "compares with the baseline, so the rule needs baseline = "
                      "\"preceding 1h\" or \"yesterday\"")
        if any(c.subject == "count" for c in cl) and measure.op != "share":
            raise err(key, "\"count\" is the number of calls a share counts: "
                      "only a \"share of ...\" measure has one")
    inhibits = raw.get("inhibits", [])
    if not isinstance(inhibits, list) or not all(isinstance(i, str) for i in inhibits):
        raise err("inhibits", "must be a list of rule ids (or [\"*\"] for every rule)")

    def count(key: str) -> int:
        v = raw.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise err(key, "must be a whole number, 0 or more")
        return v

    min_calls = count("min_calls")
    min_baseline_calls = count("min_baseline_calls")
    for_min = get("for", parse_optional_duration, default=0)
    keep_firing_min = get("keep_firing_for", parse_optional_duration, default=0)
    repeat_min = get("repeat_interval", parse_duration, default=DEFAULT_REPEAT_MIN)
    if repeat_min < 1:
        raise err("repeat_interval", "must be at least 1m")
    diagnosis = need_str("diagnosis")
    fixes = raw.get("fixes", [])
    if not isinstance(fixes, list) or not all(isinstance(f, str) for f in fixes):
        raise err("fixes", "must be a list of text lines")
    for key, text in [("title", title), ("diagnosis", diagnosis)] + [("fixes", f) for f in fixes]:
        try:
            _check_template(text)
        except ValueError as e:
            raise err(key, str(e)) from None
    return Rule(
        id=rid, file=file, title=title, severity=severity, group_by=group_by,
        window_min=window, measure=measure, clauses=clauses,
        fire_when=raw["fire_when"], min_calls=min_calls,
        min_baseline_calls=min_baseline_calls, baseline=baseline, for_min=for_min,
        diagnosis=diagnosis.strip(), fixes=tuple(fixes), line=loc.rule_line(index),
        id_line=loc.field_line(index, "id"),
        resolve_clauses=resolve_clauses, resolve_when=raw.get("resolve_when"),
        keep_firing_min=keep_firing_min, repeat_min=repeat_min, inhibits=tuple(inhibits),
    )


def parse_rule_file(path: str | Path, text: str | None = None) -> list[Rule]:
    """Parse one file; raise RuleError on the first problem found."""
    path = Path(path)
    file = str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RuleError(file, f"cannot read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        raise RuleError(file, f"not valid TOML: {e}", line=int(m.group(1)) if m else None) from None
    loc = _Locator(text)
    extra = set(data) - {"rule"}
    if extra:
        key = sorted(extra)[0]
        pat = re.compile(r"^\s*(\[+\s*" + re.escape(key) + r"\b|" + re.escape(key) + r"\s*=)")
        line = next((i + 1 for i, ln in enumerate(loc.lines) if pat.match(ln)), None)
        raise RuleError(file, f"unexpected top-level key {key!r}; rules go in [[rule]] tables",
                        line=line)
    raws = data.get("rule", [])
    if not isinstance(raws, list):
        raise RuleError(file, "write rules as [[rule]] tables (an array of tables)")
    rules = []
    seen: set[str] = set()
    for i, raw in enumerate(raws):
        rule = parse_rule(raw, file, i, loc)
        if rule is None:
            continue
        if rule.id in seen:
            raise RuleError(file, "this id is used twice in the file",
                            line=loc.field_line(i, "id"), rule=rule.id, field="id")
        seen.add(rule.id)
        rules.append(rule)
    return rules


@dataclass
class LoadedRules:
    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def rule_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    return sorted(f for f in p.glob("*.toml") if not f.name.endswith(".test.toml"))


def load_rules(path: str | Path) -> LoadedRules:
    """Load every rule file under `path`; broken files are reported, not fatal.

    The same id in two files is an error in the second file: ids name alerts.
    """
    out = LoadedRules()
    p = Path(path)
    if not p.exists():
        out.errors.append(RuleError(str(p), "no such file or folder"))
        return out
    seen: dict[str, str] = {}
    for f in rule_files(p):
        out.files.append(str(f))
        try:
            rules = parse_rule_file(f)
        except RuleError as e:
            out.errors.append(e)
            continue
        dup = next((r for r in rules if r.id in seen), None)
        if dup:
            out.errors.append(RuleError(str(f), f"id already used in {seen[dup.id]}",
                                        line=dup.id_line, rule=dup.id, field="id"))
            continue
        for r in rules:
            seen[r.id] = str(f)
        out.rules.extend(rules)
    return out


def override(rule: Rule, key: str, value: str) -> Rule:
    """A copy of `rule` with one field changed, as `sentinel replay --set` asks:
    `threshold` (the number of the first clause on the measure), or any of
    fire_when, resolve_when, window, for, keep_firing_for, min_calls,
    min_baseline_calls, baseline, severity."""
    from dataclasses import replace
    v = value.strip()
    if key == "threshold":
        m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*(%|s|x)?", v)
        if not m:
            raise ValueError(f"threshold: write a number such as 15%, 2.5s or 3x, got {value!r}")
        idx = next((i for i, c in enumerate(rule.clauses) if c.subject == ""), None)
        if idx is None:
            raise ValueError(f"rule {rule.id!r} has no clause on its measure to change")
        old = rule.clauses[idx]
        new = replace(old, number=float(m.group(1)))
        clauses = rule.clauses[:idx] + (new,) + rule.clauses[idx + 1:]
        text = " and ".join(_clause_text(c, rule.measure.unit) for c in clauses)
        return replace(rule, clauses=clauses, fire_when=text)
    if key in ("fire_when", "resolve_when"):
        clauses = parse_condition(v)
        if key == "fire_when":
            return replace(rule, clauses=clauses, fire_when=v)
        return replace(rule, resolve_clauses=clauses, resolve_when=v)
    if key == "window":
        return replace(rule, window_min=parse_duration(v))
    if key in ("for", "keep_firing_for"):
        return replace(rule, **{"for_min" if key == "for" else "keep_firing_min":
                                parse_optional_duration(v)})
    if key in ("min_calls", "min_baseline_calls"):
        if not v.isdigit():
            raise ValueError(f"{key}: must be a whole number, got {value!r}")
        return replace(rule, **{key: int(v)})
    if key == "baseline":
        return replace(rule, baseline=parse_baseline(v))
    if key == "severity":
        if v not in SEVERITIES:
            raise ValueError(f"severity: one of {', '.join(SEVERITIES)}")
        return replace(rule, severity=v)
    raise ValueError(f"cannot change {key!r}; try threshold, fire_when, resolve_when, window, "
                     "for, keep_firing_for, min_calls, min_baseline_calls, baseline, severity")


def _clause_text(c: Clause, measure_unit: str) -> str:
    subject = f"{c.subject} " if c.subject else ""
    number = f"{c.number:g}"
    unit = "x baseline" if c.relative else (measure_unit if not c.subject and measure_unit in ("%", "s") else "")
    return f"{subject}{c.op} {number}{unit}".strip()
