"""The Web API source against a local HTTP server answering as VOS3000 does.

No mocks: a real ThreadingHTTPServer on a free port (tests/vos_fixtures.py,
FakeVosApi) implements GetCdr and GetAllCustomers from the manual's fields and
the failure modes seen in the field. The clock is the `now_ms` given to pull.
"""

from __future__ import annotations

import textwrap

import pytest

from sentinel.sources import SourceError
from sentinel.sources.vosapi import VosApiSource, api_record
from sentinel.store import Store

from tests.vos_fixtures import FakeVosApi, api_cdr, drain, free_port, store_flownos, utc_ms

NOON = utc_ms(2026, 11, 21, 12, 0)
MIN = 60_000


@pytest.fixture
def api():
    with FakeVosApi() as server:
        server.customers = ["ACC-1", "ACC-2", "ACC-3"]
        yield server


def source(api, **opts) -> VosApiSource:
    options = {"url": api.url if isinstance(api, FakeVosApi) else api}
    options.update(opts)
    return VosApiSource.from_options("api", options, None)


def day_of_calls(first: int, n: int, stop_from: int, step_ms: int = 20_000, accounts=3) -> list[dict]:
    return [api_cdr(first + i, stop_from + i * step_ms, account=f"ACC-{1 + i % accounts}")
            for i in range(n)]


# -- fields ---------------------------------------------------------------------------

def test_infocdrs_fields_map_to_a_cdr():
    from sentinel.cdr import cdr_from_record
    item = api_cdr(42, NOON, account="ACC-7", talk_s=61, end_reason=200, callerPdd=2300)
    c = cdr_from_record(api_record(item))
    assert (c.flowno, c.stop_ms, c.start_ms, c.talk_s, c.billed_s) == (42, NOON, NOON - 61_000, 61, 120)
    assert (c.ingress, c.egress, c.account) == ("CUST-ACC-7", "VEND-01", "ACC-7")
    assert (c.caller, c.callee, c.caller_ip, c.callee_ip) == (
        "15551230000", "4420790000", "198.51.100.7", "192.0.2.9")
    assert (c.end_reason, c.end_direction, c.pdd_ms) == (200, 0, 2300)
    assert api_record(item)["customername"] == "ACC-7 Ltd"       # accountName


# -- options --------------------------------------------------------------------------

def test_options_defaults_and_alert_after():
    src = VosApiSource.from_options("api", {"url": "http://10.0.0.5:8080/"}, None)
    assert src.base == "http://10.0.0.5:8080"
    assert src.min_interval_ms == 300_000 and src.alert_after_s == 300
    assert src.accounts is None
    src = VosApiSource.from_options("api", {"url": "https://vos:8443/external/server",
                                            "alert_after": "2m", "tls_verify": False,
                                            "accounts": ["A", "B"]}, None)
    assert src.base == "https://vos:8443" and src.alert_after_s == 120 and src.accounts == ["A", "B"]
    assert "alert_after" in VosApiSource.OPTIONS and "min_interval" in VosApiSource.OPTIONS


@pytest.mark.parametrize("options, words", [
    ({}, "'url' is required"),
    ({"url": "vos:8080"}, "'url' is required"),
    ({"url": "http://v", "accounts": "ACC-1"}, "'accounts'"),
    ({"url": "http://v", "accounts": []}, "'accounts'"),
    ({"url": "http://v", "min_interval": "often"}, "'min_interval'"),
    ({"url": "http://v", "server_timezone": "Nowhere/Land"}, "unknown time zone"),
    ({"url": "http://v", "accounts_per_request": 0}, "'accounts_per_request'"),
    ({"url": "http://v", "tls_verify": "no"}, "'tls_verify'"),
    ({"url": "http://v", "ssl_ca": "ca.pem"}, "needs an https"),
    ({"url": "http://v", "password": "x"}, "unknown option 'password'"),
])
def test_bad_options_are_clear_value_errors(options, words):
    with pytest.raises(ValueError, match=words):
        VosApiSource.from_options("api", options, None)


def test_config_file_builds_the_source(tmp_path):
    from sentinel.app import build_source
    from sentinel.config import load_config
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text(textwrap.dedent("""
        [[source]]
        name = "vos-api"
        kind = "vosapi"
        url = "http://10.0.0.5:8080"
        accounts = ["ACC-1", "ACC-2"]
        callee_gateway = "VEND-01"
        min_interval = "10m"
    """))
    src = build_source(load_config(cfg).sources[0])
    assert isinstance(src, VosApiSource) and src.min_interval_ms == 600_000
    assert src.callee_gateway == "VEND-01" and src.accounts == ["ACC-1", "ACC-2"]


# -- pulling ---------------------------------------------------------------------------

def test_repeated_whole_day_pulls_keep_only_what_is_new(api):
    api.cdrs = day_of_calls(1, 150, NOON - 50 * MIN)            # 12:10 .. 11:59:40
    src, store = source(api), Store()
    received, new, problems = drain(src, store, NOON)
    assert (received, new, problems) == (150, 150, [])
    assert api.calls("GetAllCustomers") and api.calls("GetCdr")[0] == {
        "accounts": ["ACC-1", "ACC-2", "ACC-3"], "beginTime": "20261121", "endTime": "20261121"}

    api.cdrs += day_of_calls(1000, 15, NOON + MIN)              # 5 minutes later
    received, new, _ = drain(src, store, NOON + 5 * MIN)
    assert new == 15 and received == 15                        # the rest of the day is dropped
    assert store.count_cdrs() == 165
    got = store_flownos(store)
    assert len(got) == len(set(got))

    # The watermark stays compact: only flowNos within `overlap` of the newest stop.
    wm = store.watermark("api")
    newest = max(c["stop"] for c in api.cdrs)
    assert wm["stop_ms"] == newest
    assert {f for f, _ in wm["recent"]} == {c["flowNo"] for c in api.cdrs
                                            if c["stop"] >= newest - 2 * MIN}
    assert len(wm["recent"]) < 10

    assert drain(src, store, NOON + 10 * MIN)[:2] == (0, 0)     # nothing new


def test_first_pull_keeps_only_the_backfill(api):
    api.cdrs = day_of_calls(1, 40, NOON - 3 * 3600_000, step_ms=5 * MIN)   # 09:00 .. 12:15
    src, store = source(api, backfill="1h"), Store()
    drain(src, store, NOON)
    assert sorted(store_flownos(store)) == [c["flowNo"] for c in api.cdrs
                                            if NOON - 3600_000 <= c["stop"]]


def test_late_row_within_the_overlap_is_caught(api):
    api.cdrs = day_of_calls(1, 30, NOON - 30 * MIN, step_ms=MIN)
    src, store = source(api), Store()
    drain(src, store, NOON)
    mark = store.watermark("api")["stop_ms"]
    api.cdrs += [api_cdr(500, mark - MIN), api_cdr(501, mark - 10 * MIN)]
    drain(src, store, NOON + 5 * MIN)
    got = set(store_flownos(store))
    assert 500 in got and 501 not in got          # 10 minutes late is beyond the 2m overlap


def test_min_interval_is_respected_even_across_restarts(api):
    api.cdrs = day_of_calls(1, 10, NOON - 10 * MIN)
    store = Store()
    src = source(api, min_interval="5m")
    drain(src, store, NOON)
    n = len(api.calls("GetCdr"))
    for t in (NOON + MIN, NOON + 4 * MIN + 59_000):
        assert drain(src, store, t) == (0, 0, [])
    assert len(api.calls("GetCdr")) == n
    # A restarted daemon (new source, same store) waits too.
    assert drain(source(api, min_interval="5m"), store, NOON + 2 * MIN) == (0, 0, [])
    assert len(api.calls("GetCdr")) == n
    drain(src, store, NOON + 5 * MIN)
    assert len(api.calls("GetCdr")) == n + 1


def test_configured_accounts_gateways_and_requests_per_chunk(api):
    api.cdrs = day_of_calls(1, 90, NOON - 40 * MIN) + [
        api_cdr(900, NOON - MIN, account="ACC-9"),                      # not configured
        api_cdr(901, NOON - MIN, account="ACC-1", calleeGateway="VEND-99")]
    src = source(api, accounts=["ACC-1", "ACC-2", "ACC-3"], accounts_per_request=2,
                 callee_gateway="VEND-01")
    store = Store()
    batches = list(src.pull(store, NOON))
    assert not api.calls("GetAllCustomers")
    assert [b["accounts"] for b in api.calls("GetCdr")] == [["ACC-1", "ACC-2"], ["ACC-3"]]
    assert all(b["calleeGateway"] == "VEND-01" and "callerGateway" not in b
               for b in api.calls("GetCdr"))
    # The watermark comes with the last request only: a crash between two re-reads.
    assert [b.watermark is None for b in batches] == [True, False]
    for b in batches:
        store.ingest(src.name, b.cdrs, watermark=b.watermark)
    assert sorted(store_flownos(store)) == list(range(1, 91))


def test_pull_across_midnight_asks_for_yesterday_too(api):
    after = utc_ms(2026, 11, 22, 0, 20)
    crossing = api_cdr(1, utc_ms(2026, 11, 22, 0, 10), talk_s=900)     # started 23:55 on the 21st
    api.cdrs = day_of_calls(100, 30, utc_ms(2026, 11, 21, 23, 30), step_ms=MIN) + [crossing]
    src, store = source(api), Store()
    drain(src, store, utc_ms(2026, 11, 21, 23, 50))
    drain(src, store, after)
    assert api.calls("GetCdr")[-1]["beginTime"] == "20261121"
    assert api.calls("GetCdr")[-1]["endTime"] == "20261122"
    assert 1 in store_flownos(store) and store.count_cdrs() == 31
    # Once the watermark is past 03:00, only today is asked for.
    api.cdrs.append(api_cdr(2, utc_ms(2026, 11, 22, 3, 59)))
    drain(src, store, utc_ms(2026, 11, 22, 4, 0))
    drain(src, store, utc_ms(2026, 11, 22, 4, 5))
    assert api.calls("GetCdr")[-1]["beginTime"] == "20261122"


def test_server_timezone_names_the_days():
    with FakeVosApi(tz="Asia/Shanghai") as api:
        api.customers = ["ACC-1"]
        now = utc_ms(2026, 11, 21, 17, 30)                   # 01:30 on the 22nd in Shanghai
        api.cdrs = [api_cdr(1, now - 10 * MIN, account="ACC-1")]
        store = Store()
        drain(source(api, server_timezone="Asia/Shanghai"), store, now)
        assert api.calls("GetCdr")[-1]["endTime"] == "20261122"
        assert store.count_cdrs() == 1


def test_bad_rows_are_reported_once_and_skipped(api):
    api.cdrs = day_of_calls(1, 20, NOON - 20 * MIN) + [
        api_cdr(50, NOON - MIN, holdTime=-3),
        api_cdr(51, NOON - MIN, endReason="busy"),
        api_cdr(52, NOON - MIN, stop=None),
        "not an object",
    ]
    src, store = source(api), Store()
    received, new, problems = drain(src, store, NOON)
    assert (received, new) == (20, 20)                         # 4 bad items skipped
    assert len(problems) == 4
    assert any("flowNo 50" in p and "talk time is negative" in p for p in problems)
    assert any("flowNo 51" in p and "'endreason': is not a number" in p for p in problems)
    assert any("flowNo 52" in p and "'stoptime': is missing" in p for p in problems)
    assert any("item 0: is str, not an object" in p for p in problems)
    assert all("GetCdr accounts ACC-1..ACC-3" in p for p in problems)
    assert src.health()["ok"]
    assert drain(src, store, NOON + 5 * MIN)[2] == []          # not again


def test_a_stop_time_far_in_the_future_does_not_freeze_the_watermark(api):
    # A call of today with a garbage stop time 400 days ahead.
    api.cdrs = day_of_calls(1, 10, NOON - 10 * MIN) + [
        api_cdr(99, NOON + 400 * 86_400_000, start=NOON - MIN)]
    src, store = source(api), Store()
    drain(src, store, NOON)
    assert store.watermark("api")["stop_ms"] < NOON
    api.cdrs.append(api_cdr(100, NOON + 2 * MIN))
    drain(src, store, NOON + 5 * MIN)
    assert 100 in store_flownos(store) and store.count_cdrs() == 12


# -- failures -----------------------------------------------------------------------------

def test_wrapped_array_answer_is_accepted(api):
    api.mode = "wrapped"
    api.cdrs = day_of_calls(1, 12, NOON - 10 * MIN)
    store = Store()
    assert drain(source(api), store, NOON)[1] == 12


@pytest.mark.parametrize("mode, words", [
    ("retcode", "GetAllCustomers failed: retCode -10033: Date range too large"),
    ("invalid_json", "GetAllCustomers: invalid JSON"),
    ("http500", "GetAllCustomers: HTTP 500 Internal Server Error"),
])
def test_failures_are_clear_source_errors(api, mode, words):
    api.mode = mode
    src = source(api)
    with pytest.raises(SourceError) as e:
        drain(src, Store(), NOON)
    msg = str(e.value)
    assert words in msg and api.url in msg and "failing since 2026-11-21T12:00:00Z" in msg
    h = src.health()
    assert h["ok"] is False and h["since_ms"] == NOON and words in h["message"]


def test_getcdr_failure_names_getcdr(api):
    src = source(api, accounts=["ACC-1"])
    api.mode = "retcode"
    with pytest.raises(SourceError, match="GetCdr failed: retCode -10033"):
        drain(src, Store(), NOON)


def test_slow_answer_times_out(api):
    api.mode, api.slow_s = "slow", 5
    src = VosApiSource(
        "api", api.url, accounts=["ACC-1"], timeout_s=0.3)
    with pytest.raises(SourceError, match=r"GetCdr: no answer within 0.3s"):
        drain(src, Store(), NOON)


def test_unreachable_server():
    src = source(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SourceError, match="GetAllCustomers: cannot reach http://127.0.0.1:.*refused"):
        drain(src, Store(), NOON)


def test_backoff_and_recovery_nothing_lost_nothing_doubled(api):
    api.cdrs = day_of_calls(1, 60, NOON - 30 * MIN)
    src = source(api, min_interval="5m", retry_min="1m", retry_max="20m")
    store = Store()
    drain(src, store, NOON)

    api.mode = "http500"
    api.cdrs += day_of_calls(1000, 30, NOON + MIN, step_ms=10_000)
    with pytest.raises(SourceError):
        drain(src, store, NOON + 5 * MIN)                       # fails: first failure 12:05
    requests = len(api.requests)
    # While waiting (never sooner than min_interval) it says so every cycle,
    # with the time of the first failure, and leaves the server alone.
    for t in (NOON + 6 * MIN, NOON + 9 * MIN):
        with pytest.raises(SourceError, match="failing since 2026-11-21T12:05:00Z.*"
                                              "next retry at 2026-11-21T12:10:00Z"):
            drain(src, store, t)
    assert len(api.requests) == requests
    with pytest.raises(SourceError, match="2 failed attempts"):
        drain(src, store, NOON + 10 * MIN)                      # retried: still failing
    h = src.health()
    assert (h["ok"], h["since_ms"], h["last_success_ms"]) == (False, NOON + 5 * MIN, NOON)

    api.mode = "ok"
    api.cdrs += day_of_calls(2000, 30, NOON + 10 * MIN, step_ms=10_000)
    with pytest.raises(SourceError):
        drain(src, store, NOON + 12 * MIN)                      # not due before 12:15
    received, new, _ = drain(src, store, NOON + 15 * MIN)
    assert new == 60
    assert sorted(store_flownos(store)) == sorted(c["flowNo"] for c in api.cdrs)
    h = src.health()
    assert h["ok"] and h["since_ms"] is None and h["last_success_ms"] == NOON + 15 * MIN
