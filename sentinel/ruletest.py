"""`sentinel test`: unit tests for rule files, in the spirit of `promtool test rules`.

A test file (`*.test.toml`, next to the rules it tests) describes traffic
compactly and what must be true at given minutes:

    [[test]]
    name = "a vendor's 503 storm fires once, then resolves"

      [[test.traffic]]              # from minute 0 to 30: 40 calls a minute via VEND-07,
      from = 0                      # 45% ending 503, the rest 200
      to = 30
      calls_per_minute = 40
      egress = "VEND-07"
      mix = { 503 = 45 }

      [[test.expect]]
      at = 10
      firing = [{ rule = "sip-503-share", group = "VEND-07", value = "45.0%" }]
      notifications = [{ kind = "firing", rule = "sip-503-share", group = "VEND-07" }]
      message_contains = ["503 Service Unavailable storm on vendor VEND-07"]

Traffic is deterministic: each minute's outcomes are allotted exactly (largest
remainder), so a test can expect exact values. `csv = "file.csv"` ingests a
VOS3000 export instead, `demo = true` the demo's healthy background traffic.
`[[test.silence]]` mutes a rule (and group) between two minutes.

Expectations are exact: an unexpected alert or notification fails the test as
much as a missing one. `firing` is the set of firing alerts at `at`;
`notifications` are those recorded since the previous expectation, held-back
ones included (`suppressed = "silence" | "inhibition" | "flapping"`).
"""

from __future__ import annotations

import re
import time
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .cdr import CDR
from .config import default_rules_dir
from .metrics import format_value
from .notifiers.terminal import format_notification
from .replay import Replayer, load_rule_list
from .rules import Rule
from .sources.demo import DemoTraffic
from .sources.files import read_cdr_file
from .store import Store

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)   # a Monday morning
MIN = 60000
_TRAFFIC_KEYS = {"from", "to", "calls_per_minute", "egress", "ingress", "account",
                 "caller_ip", "destination", "mix", "talk_seconds", "pdd_ms", "csv", "demo"}
_EXPECT_KEYS = {"at", "firing", "notifications", "message_contains"}
_TEST_KEYS = {"name", "start", "rules", "traffic", "expect", "silence"}


class TestFileError(Exception):
    pass


@dataclass
class TestResult:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)
    exercised: set[str] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class RunReport:
    results: list[TestResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)      # files that could not be read
    rules: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and all(r.ok for r in self.results)

    @property
    def untested(self) -> list[str]:
        exercised = set().union(*(r.exercised for r in self.results)) if self.results else set()
        return sorted(set(self.rules) - exercised)


# -- traffic ---------------------------------------------------------------------

def allot(n: int, mix: dict[int, float]) -> list[int]:
    """End reasons for n calls with the given percentages, exactly: the
    remainder of 100% is answered (200); rounding by largest remainder."""
    shares = dict(mix)
    rest = 100.0 - sum(shares.values())
    if rest < -1e-9:
        raise TestFileError(f"mix adds up to {sum(shares.values()):g}%, over 100%")
    if rest > 1e-9:
        shares[200] = shares.get(200, 0.0) + rest
    exact = {code: n * pct / 100.0 for code, pct in shares.items()}
    counts = {code: int(v) for code, v in exact.items()}
    left = n - sum(counts.values())
    for code in sorted(exact, key=lambda c: (-(exact[c] - counts[c]), c))[:left]:
        counts[code] += 1
    out: list[int] = []
    for code in sorted(counts):
        out += [code] * counts[code]
    # Interleave so every part of the minute sees the same mix.
    return [out[(i * 7919) % n] for i in range(n)] if n and n % 7919 else out


_flowno = [9_000_000_000_000]


def generated_calls(spec: dict, start_ms: int) -> list[CDR]:
    out = []
    mix = {int(k): float(v) for k, v in spec.get("mix", {}).items()}
    n = int(spec.get("calls_per_minute", 0))
    talk = int(spec.get("talk_seconds", 60))
    pdd = int(spec.get("pdd_ms", 2500))
    dest = str(spec.get("destination", "4420"))
    for minute in range(int(spec["from"]), int(spec["to"])):
        base = start_ms + minute * MIN
        for i, code in enumerate(allot(n, mix)):
            _flowno[0] += 1
            stop = base + (i * MIN) // max(n, 1) + 500
            answered = 200 <= code <= 299
            never_routed = code in (8, -9, 17, 18, 19, 7, 6, 22)
            out.append(CDR(
                flowno=_flowno[0], start_ms=stop - talk * 1000 if answered else 0,
                stop_ms=stop, talk_s=talk if answered else 0,
                billed_s=talk if answered else 0, caller="15550000000",
                callee=f"{dest}{1000000 + i}", ingress=spec.get("ingress", "CUST-TEST"),
                egress="" if never_routed else spec.get("egress", "VEND-TEST"),
                account="" if code == -9 else spec.get("account", "ACC-TEST"),
                caller_ip=spec.get("caller_ip", "198.51.100.1"), callee_ip="192.0.2.1",
                pdd_ms=pdd, end_direction=1, end_reason=code))
    return out


def traffic_cdrs(spec: dict, start_ms: int, base_dir: Path) -> list[CDR]:
    unknown = set(spec) - _TRAFFIC_KEYS
    if unknown:
        raise TestFileError(f"traffic: unknown key {sorted(unknown)[0]!r}; known: "
                            + ", ".join(sorted(_TRAFFIC_KEYS)))
    if "csv" in spec:
        cdrs, bad = [], []
        for line, item in read_cdr_file(base_dir / spec["csv"]):
            (bad if isinstance(item, Exception) else cdrs).append((line, item))
        if bad:
            line, err = bad[0]
            raise TestFileError(f"{spec['csv']}:{line}: {err}")
        return [c for _, c in cdrs]
    if "from" not in spec or "to" not in spec:
        raise TestFileError("traffic needs from and to (minutes from the test's start)")
    if spec.get("demo"):
        t = DemoTraffic(start_ms, incidents=())
        return list(t.calls_between(start_ms + int(spec["from"]) * MIN,
                                    start_ms + int(spec["to"]) * MIN))
    return generated_calls(spec, start_ms)


# -- running ---------------------------------------------------------------------

def _expected_alerts(items: list[dict]) -> list[tuple[str, str]]:
    return sorted((i["rule"], i.get("group", "")) for i in items)


def _suppression_kind(text: str | None) -> str | None:
    """'inhibited by X on Y' -> 'inhibition', 'silenced #1 ...' -> 'silence'."""
    if not text:
        return None
    for prefix, kind in (("inhibited", "inhibition"), ("silenced", "silence"),
                         ("flapping", "flapping")):
        if text.startswith(prefix):
            return kind
    return text


def _value_ok(expected: Any, value: float | None, unit: str) -> bool:
    if isinstance(expected, str):
        return format_value(value, unit) == expected
    return value is not None and abs(value - float(expected)) <= 0.05 + 1e-9


def run_test(test: dict, rules: list[Rule], file: str, base_dir: Path, tz) -> TestResult:
    t0 = time.perf_counter()
    result = TestResult(file, test.get("name", "(unnamed)"))
    unknown = set(test) - _TEST_KEYS
    if unknown:
        result.failures.append(f"unknown key {sorted(unknown)[0]!r}; known: "
                               + ", ".join(sorted(_TEST_KEYS)))
        return result
    start = test.get("start", DEFAULT_START)
    if isinstance(start, str):
        start = datetime.fromisoformat(start)
    if isinstance(start, datetime) and start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    start_ms = int(start.timestamp() * 1000)
    if "rules" in test:
        wanted = set(test["rules"])
        missing = wanted - {r.id for r in rules}
        if missing:
            result.failures.append(f"no rule {sorted(missing)[0]!r} in the rule files")
            return result
        rules = [r for r in rules if r.id in wanted]
    store = Store(":memory:")
    try:
        for spec in test.get("traffic", []):
            store.ingest("test", traffic_cdrs(spec, start_ms, base_dir))
    except (TestFileError, OSError) as e:
        result.failures.append(f"traffic: {e}")
        return result
    silences = [{"rule_id": s["rule"], "grp": s.get("group"),
                 "starts_ms": start_ms + int(s.get("from", 0)) * MIN,
                 "ends_ms": start_ms + int(s["to"]) * MIN,
                 "reason": s.get("reason", "test silence"), "created_by": "test"}
                for s in test.get("silence", [])]
    units = {r.id: r.measure.unit for r in rules}
    expects = sorted(test.get("expect", []), key=lambda e: e.get("at", 0))
    if not expects:
        result.failures.append("the test expects nothing: add [[test.expect]] with `at`")
        return result
    replayer = Replayer(store, rules, silences)
    try:
        minute, since = 1, []
        for exp in expects:
            bad = set(exp) - _EXPECT_KEYS
            if bad:
                result.failures.append(f"expect: unknown key {sorted(bad)[0]!r}; known: "
                                       + ", ".join(sorted(_EXPECT_KEYS)))
                continue
            at = int(exp["at"])
            while minute <= at:
                since += replayer.step(start_ms + minute * MIN)
                minute += 1
            _check(exp, at, replayer, since, units, tz, result)
            since = []
    finally:
        replayer.close()
        store.close()
    result.seconds = time.perf_counter() - t0
    return result


def _check(exp: dict, at: int, replayer: Replayer, notes: list[dict], units: dict,
           tz, result: TestResult) -> None:
    firing = replayer.firing()
    result.exercised |= {a.rule_id for a in firing} | {n["rule_id"] for n in notes}
    if "firing" in exp:
        want = _expected_alerts(exp["firing"])
        got = sorted((a.rule_id, a.group) for a in firing)
        result.exercised |= {r for r, _ in want}
        if want != got:
            result.failures.append(_diff(f"at minute {at}: firing alerts", want, got))
        by_key = {(a.rule_id, a.group): a for a in firing}
        for item in exp["firing"]:
            a = by_key.get((item["rule"], item.get("group", "")))
            if a is not None and "value" in item and not _value_ok(
                    item["value"], a.value, units.get(a.rule_id, "")):
                result.failures.append(
                    f"at minute {at}: {item['rule']} on {item.get('group') or 'all traffic'}\n"
                    f"    expected value: {item['value']}\n"
                    f"    got:            {format_value(a.value, units.get(a.rule_id, ''))}")
    if "notifications" in exp:
        want = sorted((i["kind"], i["rule"], i.get("group", ""), i.get("suppressed"))
                      for i in exp["notifications"])
        got = sorted((n["kind"], n["rule_id"], n["grp"], _suppression_kind(n.get("suppressed")))
                     for n in notes if n["kind"] != "problem")
        result.exercised |= {w[1] for w in want}
        if Counter(want) != Counter(got):
            result.failures.append(_diff(f"at minute {at}: notifications since the last check",
                                         want, got))
    if "message_contains" in exp:
        text = "\n".join(format_notification(n["payload"], tz) for n in notes)
        for s in exp["message_contains"]:
            if s not in text:
                result.failures.append(f"at minute {at}: no message contains {s!r}; messages:\n"
                                       + _indent(text or "(no notification)"))


def _fmt(item: tuple) -> str:
    if len(item) == 2:
        return f"{item[0]} on {item[1] or 'all traffic'}"
    kind, rule, group, supp = item
    return f"{kind} {rule} on {group or 'all traffic'}" + (f" (held back: {supp})" if supp else "")


def _diff(title: str, want: list, got: list) -> str:
    missing = list((Counter(want) - Counter(got)).elements())
    extra = list((Counter(got) - Counter(want)).elements())
    lines = [title,
             "    expected: " + ("; ".join(_fmt(w) for w in want) or "(nothing)"),
             "    got:      " + ("; ".join(_fmt(g) for g in got) or "(nothing)")]
    if missing:
        lines.append("    missing:    " + "; ".join(_fmt(m) for m in missing))
    if extra:
        lines.append("    unexpected: " + "; ".join(_fmt(x) for x in extra))
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("      " + ln for ln in text.splitlines())


def test_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    return sorted(p.glob("*.test.toml"))


def run_tests(path: str | Path | None = None, *, rules_path: str | Path | None = None,
              pattern: str | None = None, tz=timezone.utc) -> RunReport:
    """Run every test file under `path` (a folder or one file) against the
    rule files of `rules_path` (default: the folder the tests are in)."""
    path = Path(path or default_rules_dir())
    rules_path = Path(rules_path) if rules_path else (path if path.is_dir() else path.parent)
    report = RunReport()
    rules = load_rule_list(rules_path)
    report.rules = sorted(r.id for r in rules)
    match = re.compile(pattern) if pattern else None
    for f in test_files(path):
        try:
            data = tomllib.loads(f.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            report.errors.append(f"{f}: {e}")
            continue
        extra = set(data) - {"test"}
        if extra:
            report.errors.append(f"{f}: unexpected top-level key {sorted(extra)[0]!r}; "
                                 "tests go in [[test]] tables")
            continue
        for test in data.get("test", []):
            if match and not match.search(test.get("name", "")):
                continue
            report.results.append(run_test(test, rules, str(f), f.parent, tz))
    return report


def format_report(report: RunReport) -> str:
    lines = []
    for e in report.errors:
        lines.append(f"ERROR {e}")
    for r in report.results:
        lines.append(f"{'PASS' if r.ok else 'FAIL'} {r.file}: {r.name}")
        for failure in r.failures:
            lines.append(_indent_block(failure))
    passed = sum(r.ok for r in report.results)
    failed = len(report.results) - passed
    untested = report.untested
    lines.append(f"{passed} passed, {failed} failed")
    lines.append("coverage: every rule is exercised by a test" if not untested else
                 f"coverage: {len(untested)} of {len(report.rules)} rules have no test: "
                 + ", ".join(untested))
    return "\n".join(lines)


def _indent_block(text: str) -> str:
    return "\n".join("  " + ln for ln in text.splitlines())


def junit_xml(report: RunReport) -> str:
    failures = sum(not r.ok for r in report.results)
    suite = ET.Element("testsuite", name="sentinel rules", tests=str(len(report.results)),
                       failures=str(failures), errors=str(len(report.errors)))
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=r.file, name=r.name,
                             time=f"{r.seconds:.3f}")
        if not r.ok:
            f = ET.SubElement(case, "failure", message=r.failures[0].splitlines()[0])
            f.text = "\n\n".join(r.failures)
    for e in report.errors:
        case = ET.SubElement(suite, "testcase", classname="sentinel", name="test file")
        ET.SubElement(case, "error", message=e).text = e
    return ET.tostring(suite, encoding="unicode")
