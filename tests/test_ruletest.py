"""`sentinel test`: the shipped pack passes its own tests; a rule or a test
changed to disagree fails with a readable expected-against-got diff."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sentinel.config import default_rules_dir
from sentinel.ruletest import allot, format_report, run_tests


def sentinel(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentinel", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def pack(tmp_path) -> Path:
    dst = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), dst)
    return dst


def test_the_shipped_pack_passes_its_tests_and_covers_every_rule(tmp_path):
    r = sentinel("test", str(default_rules_dir()), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout
    assert "coverage: every rule is exercised by a test" in r.stdout


def test_a_rule_changed_to_disagree_fails_with_a_diff(pack, tmp_path):
    f = pack / "sip-vendor-failures.toml"
    f.write_text(f.read_text().replace('fire_when = "> 10% and count >= 10"',
                                       'fire_when = "> 50% and count >= 10"', 1))
    r = sentinel("test", str(pack), cwd=tmp_path)
    assert r.returncode == 1
    assert "FAIL " in r.stdout and "a vendor's 503 storm fires once" in r.stdout
    assert "expected: sip-503-share on VEND-07; sip-5xx-share on VEND-07" in r.stdout
    assert "missing:    sip-503-share on VEND-07" in r.stdout


def test_a_test_changed_to_disagree_fails_with_the_values(pack, tmp_path):
    f = pack / "sip-vendor-failures.test.toml"
    f.write_text(f.read_text().replace('group = "VEND-11", value = "30.0%"',
                                       'group = "VEND-11", value = "25.0%"'))
    r = sentinel("test", str(pack), "--run", "408", cwd=tmp_path)
    assert r.returncode == 1
    assert "expected value: 25.0%" in r.stdout and "got:            30.0%" in r.stdout
    assert r.stdout.count("FAIL") == 1 and "1 failed" in r.stdout and "0 passed" in r.stdout


def test_an_unexpected_alert_fails_as_much_as_a_missing_one(pack, tmp_path):
    f = pack / "sip-vendor-failures.test.toml"
    text = f.read_text()
    f.write_text(text.replace(
        'firing = [{ rule = "sip-488-codec", group = "VEND-03", value = "20.0%" }]',
        'firing = []'))
    report = run_tests(pack, pattern="488")
    assert not report.ok
    out = format_report(report)
    assert "unexpected: sip-488-codec on VEND-03" in out


def test_run_pattern_junit_and_coverage(pack, tmp_path):
    (pack / "security.test.toml").unlink()
    junit = tmp_path / "report.xml"
    r = sentinel("test", str(pack), "--run", "scanner|codec", "--junit", str(junit), cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    assert "1 passed, 0 failed" in r.stdout                    # only the codec test is left
    assert "unauthorized-ip" in r.stdout.split("coverage:")[1]  # now untested
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    assert suite.find("testcase").get("name") == "488 codec mismatch on a vendor"


def test_junit_reports_failures(pack, tmp_path):
    f = pack / "sip-vendor-failures.test.toml"
    f.write_text(f.read_text().replace('value = "20.0%"', 'value = "21.0%"'))
    junit = tmp_path / "report.xml"
    sentinel("test", str(pack), "--run", "488", "--junit", str(junit), cwd=tmp_path)
    case = ET.parse(junit).getroot().find("testcase")
    assert "expected value: 21.0%" in case.find("failure").text


def test_traffic_mix_is_allotted_exactly():
    codes = allot(40, {503: 45})
    assert codes.count(503) == 18 and codes.count(200) == 22
    codes = allot(7, {401: 50, 407: 50})
    assert sorted((codes.count(401), codes.count(407))) == [3, 4] and len(codes) == 7
    with pytest.raises(Exception):
        allot(10, {503: 80, 486: 30})
