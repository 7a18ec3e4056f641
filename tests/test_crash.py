"""kill -9 in the middle of cycles: after a restart, every alert that fired is
announced exactly once, and so is every resolve. Nothing lost, nothing doubled."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
from collections import Counter

from sentinel.store import Store

CHILD = textwrap.dedent('''
    import sys, time
    from datetime import datetime, timezone
    from sentinel.app import Sentinel
    from sentinel.config import Config
    from sentinel.sources.demo import DemoSource, DemoTraffic, Incident
    from sentinel.store import Store

    path, rules, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    # kill -9 at the kill_at-th write: before it (odd) or right after it (even).
    import os, signal
    writes = [0]
    def deadly(method):
        def wrapped(*a, **kw):
            writes[0] += 1
            if writes[0] == kill_at and kill_at % 2:
                os.kill(os.getpid(), signal.SIGKILL)
            result = method(*a, **kw)
            if writes[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapped
    for name in ("ingest", "save_alert_changes", "mark_delivered", "record_pull"):
        setattr(Store, name, deadly(getattr(Store, name)))
    start = int(datetime(2026, 11, 20, 8, tzinfo=timezone.utc).timestamp() * 1000)
    incidents = (Incident("vendor-503-storm", 20, 40, "VEND-07"),
                 Incident("unauthorized-scan", 50, 60, "203.0.113.66"))
    store = Store(path)
    app = Sentinel(Config(store=path, rules=rules), store=store,
                   sources=[DemoSource("demo", DemoTraffic(start, incidents=incidents))],
                   notifiers=[])
    wm = store.watermark("demo")
    t = wm["until_ms"] + 60000 if wm else start + 10 * 60000
    while t <= start + 90 * 60000:
        app.cycle(t)
        t += 60000
    print("done", flush=True)
''')


def announced(path):
    store = Store(path)
    try:
        return Counter((n["kind"], n["rule_id"], n["grp"]) for n in store.notifications()
                       if not n["suppressed"])
    finally:
        store.close()


def run_child(path, rules, kill_at=0):
    return subprocess.run([sys.executable, "-c", CHILD, str(path), str(rules), str(kill_at)],
                          capture_output=True, text=True, timeout=300)


def test_kill_dash_nine_neither_loses_nor_doubles(tmp_path):
    from sentinel.config import default_rules_dir
    rules = default_rules_dir()
    calm = tmp_path / "calm.db"
    assert run_child(calm, rules).stdout.strip() == "done"
    expected = announced(calm)
    assert expected[("firing", "sip-503-share", "VEND-07")] == 1
    assert expected[("firing", "unauthorized-ip", "203.0.113.66")] == 1
    assert expected[("resolved", "sip-503-share", "VEND-07")] == 1

    crashed = tmp_path / "crashed.db"
    rng = random.Random(3)
    kills = 0
    while True:
        r = run_child(crashed, rules, kill_at=rng.randint(1, 120))
        if r.returncode == 0:
            assert r.stdout.strip() == "done"
            break
        assert r.returncode == -signal.SIGKILL, r.stderr
        kills += 1
        assert kills < 100
    assert kills >= 3
    got = announced(crashed)
    assert all(n == 1 for n in got.values()), got
    assert set(got) == set(expected)
