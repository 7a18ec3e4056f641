"""`sentinel demo` must show a new user what Sentinel catches: every injected
incident diagnosed on the right gateway, account or IP, and silence otherwise."""

from __future__ import annotations

import io

import pytest

from sentinel.config import Config
from sentinel.demo import EXPECTED, run_demo
from sentinel.sources.demo import DEFAULT_INCIDENTS


@pytest.fixture(scope="module")
def demo():
    out = io.StringIO()
    summary = run_demo(Config(), out=out)
    return summary, out.getvalue()


def test_every_incident_is_diagnosed_on_the_right_target(demo):
    summary, _ = demo
    assert summary.missed == []
    for inc in DEFAULT_INCIDENTS:
        alerts = [n for n in summary.caught[inc.name] if n["rule_id"] == EXPECTED[inc.name]]
        assert alerts, inc.name
        assert all(n["grp"] == inc.target for n in alerts), (inc.name, alerts)


def test_at_least_six_different_diagnoses(demo):
    summary, _ = demo
    assert len({n["rule_id"] for n in summary.firings}) >= 6


def test_healthy_stretches_stay_quiet(demo):
    summary, _ = demo
    assert summary.unexplained == []


def test_output_reads_as_a_diagnosis(demo):
    _, text = demo
    storm = text[text.index("FIRING [critical] 503 Service Unavailable storm on vendor VEND-07"):]
    storm = storm[:storm.index("rule sip-503-share")]
    assert "vendor gateway VEND-07" in storm
    assert "Diagnosis:" in storm and "What to do:" in storm
    assert "503 Service Unavailable" in storm.split("Top end reasons:")[1]
    assert "RESOLVED [critical] 503 Service Unavailable storm on vendor VEND-07" in text
    assert "account ACC-1017" in text and "caller IP 203.0.113.66" in text


def test_each_incident_fires_once_and_resolves(demo):
    summary, text = demo
    for inc in DEFAULT_INCIDENTS:
        fires = [n for n in summary.caught[inc.name] if n["rule_id"] == EXPECTED[inc.name]]
        assert len(fires) == 1, (inc.name, len(fires))
