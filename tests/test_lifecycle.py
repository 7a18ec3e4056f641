"""The alert lifecycle, driven by a controllable clock: every transition, the
noise controls (hysteresis, reminders, flapping, inhibition, silences), no
data, and restarts between every pair of steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.alerts import (FIRING, INACTIVE, PENDING, RESOLVED, AlertManager, AlertState,
                             delivered, next_state)
from sentinel.evaluate import Evaluation, Observation
from sentinel.metrics import GroupStats
from sentinel.rules import parse_rule_file
from sentinel.store import Store

T0 = 1_795_249_200_000
MIN = 60000

RULES = '''
[[rule]]
id = "storm"
title = "503 storm on {group}"
group_by = "egress"
window = "5m"
measure = "share of sip 503"
fire_when = "> 10%"
resolve_when = "< 7%"
min_calls = 50
repeat_interval = "1h"
inhibits = ["asr"]
diagnosis = "{value}"

[[rule]]
id = "asr"
title = "Low ASR on {group}"
group_by = "egress"
window = "5m"
measure = "asr"
fire_when = "< 30%"
min_calls = 50
diagnosis = "{value}"

[[rule]]
id = "slow"
title = "Slow to fire on {group}"
group_by = "egress"
window = "5m"
measure = "share of sip 408"
fire_when = "> 10%"
for = "3m"
keep_firing_for = "2m"
min_calls = 50
diagnosis = "{value}"

[[rule]]
id = "collapse"
title = "Collapse"
group_by = "global"
window = "5m"
measure = "asr"
fire_when = "< 20%"
min_calls = 50
inhibits = ["*"]
diagnosis = "{value}"
'''


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    f = tmp_path_factory.mktemp("rules") / "r.toml"
    f.write_text(RULES)
    return {r.id: r for r in parse_rule_file(f)}


def obs(rule, group, value, calls=100):
    matched = calls >= rule.min_calls and all(c.holds(value, None) for c in rule.clauses)
    return Observation(rule=rule, group=group, value=value, baseline=None, calls=calls,
                       base_calls=0, matched=matched, stats=GroupStats(calls=calls),
                       values={rule.measure.field: value, "calls": calls})


def evaluation(now, *observations):
    ev = Evaluation(now_ms=now, window_end_minute=now // MIN)
    for o in observations:
        ev.observations.setdefault(o.rule.id, {})[o.group] = o
    return ev


class Driver:
    """Applies a script of evaluations; can reopen the store between steps."""

    def __init__(self, path: Path, rules, restart_each_step=False):
        self.path, self.rules, self.restart = path, rules, restart_each_step
        self.store = Store(path)
        self.sent = []

    def step(self, now, *observations):
        if self.restart:
            self.store.close()
            self.store = Store(self.path)
        notes = delivered(AlertManager(self.store).apply(evaluation(now, *observations), self.rules))
        self.sent += [(round((now - T0) / MIN), n["kind"], n["rule_id"], n["grp"]) for n in notes]
        return notes

    def state(self, rule_id, group) -> AlertState:
        return AlertManager(self.store).current()[(rule_id, group)]

    def recorded(self):
        return [(round((n["created_ms"] - T0) / MIN), n["kind"], n["rule_id"], n["grp"],
                 n["suppressed"]) for n in self.store.notifications()]


# -- the pure state function -------------------------------------------------

def test_next_state_transitions(rules):
    slow, storm = rules["slow"], rules["storm"]
    st = AlertState("slow", "V")
    st, ev = next_state(st, obs(slow, "V", 20), slow, T0)
    assert (st.state, ev) == (PENDING, None)
    st, ev = next_state(st, obs(slow, "V", 20), slow, T0 + 2 * MIN)
    assert (st.state, ev) == (PENDING, None)                    # for = 3m not yet
    st, ev = next_state(st, obs(slow, "V", 20), slow, T0 + 3 * MIN)
    assert (st.state, ev) == (FIRING, "firing")
    assert st.active_since_ms == T0 and st.fired_ms == T0 + 3 * MIN
    st, ev = next_state(st, obs(slow, "V", 2), slow, T0 + 4 * MIN)
    assert (st.state, ev) == (FIRING, None)                     # keep_firing_for 2m
    st, ev = next_state(st, obs(slow, "V", 2), slow, T0 + 6 * MIN)
    assert (st.state, ev) == (RESOLVED, "resolved")
    # pending that clears goes back to inactive, quietly
    p, _ = next_state(AlertState("slow", "V"), obs(slow, "V", 20), slow, T0)
    p, ev = next_state(p, obs(slow, "V", 1), slow, T0 + MIN)
    assert (p.state, ev) == (INACTIVE, None)
    # hysteresis: fires above 10%, resolves only below 7%
    h, ev = next_state(AlertState("storm", "V"), obs(storm, "V", 12), storm, T0)
    assert ev == "firing"
    h, ev = next_state(h, obs(storm, "V", 8), storm, T0 + MIN)
    assert (h.state, ev) == (FIRING, None)
    h, ev = next_state(h, obs(storm, "V", 6.5), storm, T0 + 2 * MIN)
    assert (h.state, ev) == (RESOLVED, "resolved")


def test_not_enough_data_is_not_recovery(rules):
    storm = rules["storm"]
    st, _ = next_state(AlertState("storm", "V"), obs(storm, "V", 40), storm, T0)
    held, ev = next_state(st, obs(storm, "V", 0, calls=10), storm, T0 + MIN)
    assert (held.state, ev, held.data) == (FIRING, None, "not enough data")
    gone, ev = next_state(st, None, storm, T0 + MIN)
    assert (gone.state, ev) == (FIRING, None)


# -- notifications through the manager -----------------------------------------

SCRIPT = [  # minute, storm share on V1
    (0, 3), (1, 15), (2, 14), (3, 9), (4, 8), (5, 5), (6, 4),
    (70, 20), (71, 20), (131, 20), (132, 2),
]


def run_script(driver, rules):
    for minute, share in SCRIPT:
        driver.step(T0 + minute * MIN, obs(rules["storm"], "V1", share))


def test_fire_remind_resolve_once_each(tmp_path, rules):
    d = Driver(tmp_path / "s.db", rules)
    run_script(d, rules)
    assert d.sent == [
        (1, "firing", "storm", "V1"),
        (5, "resolved", "storm", "V1"),        # 9% and 8% are above the resolve level
        (70, "firing", "storm", "V1"),
        (131, "reminder", "storm", "V1"),      # repeat_interval 1h: at 130 the hour is not up
        (132, "resolved", "storm", "V1"),
    ]


def test_restart_between_every_step_changes_nothing(tmp_path, rules):
    steady = Driver(tmp_path / "a.db", rules)
    run_script(steady, rules)
    restarted = Driver(tmp_path / "b.db", rules, restart_each_step=True)
    run_script(restarted, rules)
    assert restarted.sent == steady.sent
    assert restarted.recorded() == steady.recorded()


def test_flapping_is_reported_once_then_quiet_until_stable(tmp_path, rules):
    d = Driver(tmp_path / "s.db", rules)
    storm = rules["storm"]
    shares = [20, 2, 20, 2, 20, 2, 20, 2]              # in and out every minute
    for i, share in enumerate(shares):
        d.step(T0 + i * MIN, obs(storm, "V1", share))
    assert [k for _, k, _, _ in d.sent] == ["firing", "resolved", "firing", "flapping"]
    # an hour without a change: stable, and the real state (resolved) is said once
    d.step(T0 + 70 * MIN, obs(storm, "V1", 2))
    assert d.sent[-1][1] == "resolved"
    assert not d.state("storm", "V1").flapping
    assert [r for r in d.recorded() if r[4] == "flapping"]       # the hidden ones are on record


def test_inhibition_same_group_and_global(tmp_path, rules):
    d = Driver(tmp_path / "s.db", rules)
    storm, asr, collapse = rules["storm"], rules["asr"], rules["collapse"]
    d.step(T0, obs(storm, "V1", 40), obs(asr, "V1", 20), obs(asr, "V2", 20))
    assert sorted(d.sent) == [(0, "firing", "asr", "V2"), (0, "firing", "storm", "V1")]
    inhibited = [r for r in d.recorded() if r[4]]
    assert inhibited == [(0, "firing", "asr", "V1", "inhibited by storm on V1")]
    # the global collapse holds back everything else, on every group
    d2 = Driver(tmp_path / "g.db", rules)
    d2.step(T0, obs(collapse, "", 10), obs(storm, "V1", 40), obs(asr, "V3", 20))
    assert d2.sent == [(0, "firing", "collapse", "")]


def test_inhibited_alert_is_announced_if_it_outlasts_the_inhibitor(tmp_path, rules):
    d = Driver(tmp_path / "s.db", rules)
    storm, asr = rules["storm"], rules["asr"]
    d.step(T0, obs(storm, "V1", 40), obs(asr, "V1", 20))
    d.step(T0 + MIN, obs(storm, "V1", 2), obs(asr, "V1", 20))        # storm resolves
    d.step(T0 + 3 * MIN, obs(storm, "V1", 2), obs(asr, "V1", 20))    # within asr's 5m window
    assert [(m, k, r) for m, k, r, _ in d.sent] == [(0, "firing", "storm"), (1, "resolved", "storm")]
    d.step(T0 + 7 * MIN, obs(storm, "V1", 2), obs(asr, "V1", 20))    # low ASR on its own now
    assert d.sent[-1] == (7, "firing", "asr", "V1")


def test_silence_hides_and_its_expiry_reveals(tmp_path, rules):
    d = Driver(tmp_path / "s.db", rules)
    storm = rules["storm"]
    d.store.add_silence("storm", "V1", T0, T0 + 30 * MIN, "vendor maintenance", "noc")
    d.step(T0 + MIN, obs(storm, "V1", 40), obs(storm, "V2", 40))
    assert d.sent == [(1, "firing", "storm", "V2")]                 # only V1 is silenced
    assert d.recorded()[0][4].startswith("silenced #1 by noc: vendor maintenance")
    d.step(T0 + 10 * MIN, obs(storm, "V1", 40), obs(storm, "V2", 40))
    assert len(d.sent) == 1                                          # no repeat of the hidden one
    d.step(T0 + 31 * MIN, obs(storm, "V1", 40), obs(storm, "V2", 40))
    assert d.sent[-1] == (31, "firing", "storm", "V1")               # the silence expired


def test_alert_that_fired_and_cleared_under_a_silence_says_nothing(tmp_path, rules):
    d = Driver(tmp_path / "s.db", rules)
    storm = rules["storm"]
    sid = d.store.add_silence("storm", None, T0, T0 + 60 * MIN, "planned", "noc")
    d.step(T0 + MIN, obs(storm, "V1", 40))
    d.step(T0 + 2 * MIN, obs(storm, "V1", 1))
    d.store.remove_silence(sid, T0 + 3 * MIN)
    d.step(T0 + 4 * MIN, obs(storm, "V1", 1))
    assert d.sent == []


def test_removed_rule_resolves_its_announced_alerts(tmp_path, rules):
    d = Driver(tmp_path / "s.db", rules)
    d.step(T0, obs(rules["storm"], "V1", 40))
    without = {k: v for k, v in rules.items() if k != "storm"}
    notes = delivered(AlertManager(d.store).apply(evaluation(T0 + MIN), without))
    assert [(n["kind"], n["rule_id"]) for n in notes] == [("resolved", "storm")]
    assert "removed" in notes[0]["payload"]["note"]
    assert AlertManager(d.store).apply(evaluation(T0 + 2 * MIN), without) == []


def test_hold_keeps_everything_as_it_is(tmp_path, rules):
    d = Driver(tmp_path / "s.db", rules)
    storm = rules["storm"]
    d.step(T0, obs(storm, "V1", 40))
    m = AlertManager(d.store)
    assert m.apply(evaluation(T0 + MIN, obs(storm, "V1", 0)), rules, hold="source down") == []
    assert d.state("storm", "V1").state == FIRING
    assert d.state("storm", "V1").state == FIRING
