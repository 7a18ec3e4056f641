"""The `sentinel` command as a user types it (run through the real entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sentinel.cdr import record_from_cdr
from sentinel.sources.files import write_cdr_file
from sentinel.store import Store

from .traffic import NOW_MS, window_calls

GOOD_RULE = '''
[[rule]]
id = "r1"
title = "503 on {group}"
group_by = "egress"
window = "5m"
measure = "share of sip 503"
fire_when = "> 10%"
min_calls = 10
diagnosis = "{value} ended 503"
'''


def sentinel(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentinel", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_check_accepts_the_default_pack(tmp_path):
    r = sentinel("check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "14 rules in 5 files, 0 errors" in r.stdout


def test_check_names_file_line_rule_and_field(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.toml").write_text(GOOD_RULE)
    (rules / "bad.toml").write_text(GOOD_RULE.replace('"r1"', '"r2"').replace(
        'fire_when = "> 10%"', 'fire_when = "above 10"'))
    r = sentinel("check", str(rules), cwd=tmp_path)
    assert r.returncode == 1
    assert f"{rules / 'bad.toml'}:8, rule 'r2', field 'fire_when'" in r.stderr
    assert "1 rules in 2 files, 1 errors" in r.stdout


def test_check_rejects_an_unknown_config_key(tmp_path):
    (tmp_path / "sentinel.toml").write_text('retention_dayz = 3\n')
    r = sentinel("check", cwd=tmp_path)
    assert r.returncode == 1
    assert "retention_dayz" in r.stderr


def test_run_once_reads_dropped_files_and_prints_alerts(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.toml").write_text(GOOD_RULE)
    import time
    now = int(time.time() * 1000)
    calls = window_calls(now, 4, {200: 20, 503: 10}, egress="VEND-CLI")
    write_cdr_file(drop / "cdr1.csv", [record_from_cdr(c) for c in calls], header=False)
    (tmp_path / "sentinel.toml").write_text(
        'store = "s.db"\nrules = "rules"\n[[source]]\nkind = "files"\nfolder = "drop"\n'
        'settle_seconds = 0\n')
    r = sentinel("run", "--once", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "FIRING [warning] 503 on VEND-CLI" in r.stdout
    assert "30 new CDRs" in r.stderr
    again = sentinel("run", "--once", cwd=tmp_path)
    assert "0 new CDRs" in again.stderr            # each file read once
    assert "FIRING" not in again.stdout            # and the alert is not re-sent


def test_replay_json_lists_firing_and_resolve(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.toml").write_text(GOOD_RULE)
    store = Store(tmp_path / "s.db")
    # 503 storm on VEND-R from 08:00 to 08:10, healthy after.
    start = NOW_MS - 30 * 60000
    store.ingest("t", window_calls(start + 10 * 60000, 10, {200: 40, 503: 40}, egress="VEND-R"))
    store.ingest("t", window_calls(NOW_MS, 20, {200: 80}, egress="VEND-R"))
    store.close()
    (tmp_path / "sentinel.toml").write_text('store = "s.db"\nrules = "rules"\n')
    r = sentinel("replay", "--from", "2026-11-21T07:50+00:00", "--to", "2026-11-21T08:20+00:00",
                 "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["kind"], e["rule_id"], e["group"]) for e in events] == [
        ("firing", "r1", "VEND-R"), ("resolved", "r1", "VEND-R")]
    assert events[0]["at_ms"] < start + 12 * 60000 < events[1]["at_ms"]


def test_run_daemon_cycles_at_once_and_stops_cleanly_on_sigterm(tmp_path):
    import signal
    import time
    drop = tmp_path / "drop"
    drop.mkdir()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.toml").write_text(GOOD_RULE)
    now = int(time.time() * 1000)
    calls = window_calls(now, 4, {200: 20, 503: 10}, egress="VEND-D")
    write_cdr_file(drop / "cdr1.csv", [record_from_cdr(c) for c in calls], header=False)
    (tmp_path / "sentinel.toml").write_text(
        'store = "s.db"\nrules = "rules"\ninterval = "1m"\n[[source]]\nkind = "files"\n'
        'folder = "drop"\nsettle_seconds = 0\n')
    p = subprocess.Popen([sys.executable, "-m", "sentinel", "run"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        line = ""
        while time.time() < deadline and "FIRING" not in line:
            line = p.stdout.readline()
        assert "FIRING [warning] 503 on VEND-D" in line     # the first cycle runs at start
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
    assert "sentinel stopped" in p.stderr.read()
    assert Store(tmp_path / "s.db").count_cdrs() == 30


def test_check_validates_slack_bot_and_source_tables(tmp_path):
    (tmp_path / "sentinel.toml").write_text('[slack]\ndefault_chanel = "#noc"\n')
    r = sentinel("check", cwd=tmp_path)
    assert r.returncode == 1 and "default_chanel" in r.stderr
    (tmp_path / "sentinel.toml").write_text('[bot]\nport = "three thousand"\n')
    r = sentinel("check", cwd=tmp_path)
    assert r.returncode == 1 and "port" in r.stderr
    (tmp_path / "sentinel.toml").write_text('[[source]]\nkind = "mysql"\nhost = "db"\n')
    r = sentinel("check", cwd=tmp_path)
    assert r.returncode != 0 and "user" in r.stderr
