"""Sliding window sums equal fresh reads of the store, minute after minute."""

from __future__ import annotations

from datetime import datetime, timezone

from sentinel.evaluate import SlidingStats, StatsCache
from sentinel.sources.demo import DemoTraffic
from sentinel.store import Store


def test_sliding_sums_equal_fresh_sums():
    start = int(datetime(2026, 11, 20, 8, tzinfo=timezone.utc).timestamp() * 1000)
    store = Store(":memory:")
    traffic = DemoTraffic(start, calls_per_minute=60)
    store.ingest("d", list(traffic.calls_between(start, start + 200 * 60000)))
    sliding = SlidingStats(store)
    first = start // 60000
    for t in range(first + 70, first + 200, 1):
        for dim, length, offset in (("egress", 5, 0), ("egress", 15, 0), ("account", 60, 10),
                                    ("caller_ip", 5, 0), ("global", 10, 0), ("egress", 5, 60)):
            end = t - offset
            fresh = StatsCache(store).get(dim, end - length, end)
            slid = sliding.get(dim, end - length, end)
            assert slid == fresh, (dim, length, offset, t)
    # a jump (not a one-minute step) rebuilds and stays exact
    assert sliding.get("egress", first + 20, first + 25) == StatsCache(store).get(
        "egress", first + 20, first + 25)
