"""The Slack bot end to end: the real Bolt app, its HTTP server, Slack's request
signatures, and the local Web API stand-in (tests/slack_standin.py) in place of
Slack. Requests are signed exactly as Slack signs them (slack_sdk's
SignatureVerifier over the raw form body); the follow-up answers arrive on the
stand-in's response_url endpoints. No mocks.

Socket Mode cannot be exercised here beyond building the handler (it needs
Slack's WebSocket endpoint); its dispatch path is run with a real
SocketModeRequest through slack_bolt's own adapter function.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from slack_bolt.request import BoltRequest
from slack_sdk.signature import SignatureVerifier

from sentinel.app import Sentinel
from sentinel.bot import (BotRunner, BotSettings, HttpServer, MuteRequest, build_app, drain,
                          parse_mute)
from sentinel.cli_bot import start_beside
from sentinel.config import Config, ConfigError
from sentinel.knowledge import load_knowledge
from sentinel.store import Store

from .slack_standin import SlackStandIn
from .test_insights import seed
from .traffic import NOW_MS, window_calls

SECRET = "e3b98f4c6a1d2b7f90c3a5d8e1f2a4b6"
TOKEN = "xoxb-0000-test"
ENV = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET}
KB = load_knowledge()
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def standin():
    """One stand-in for the module (stopping one takes half a second); `slack`
    resets it for every test. Every response_url name is unique."""
    mp = pytest.MonkeyPatch()
    for var in PROXY_VARS:
        mp.delenv(var, raising=False)
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")
    with SlackStandIn() as s:
        s.handlers["usergroups.users.list"] = lambda call: {
            "ok": True,
            "users": ["U0GROUPIE", "U0OTHER"] if _query(call).get("usergroup") == "S0NOC" else []}
        yield s
    mp.undo()


@pytest.fixture
def slack(standin):
    standin.reset()
    return standin


def _query(call) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.path).query).items()} | dict(call.body)


_apps: list = []


@pytest.fixture
def store():
    s = Store(":memory:")
    seed(s)
    yield s
    while _apps:                       # let the listeners finish before the store closes
        drain(_apps.pop())
    s.close()


def make_bot(slack, store, **bot_keys):
    cfg = Config(store=":memory:", sources=[],
                 bot={"api_url": slack.api_url, **bot_keys})
    app = build_app(cfg, store=store, env=ENV, clock=lambda: NOW_MS)
    _apps.append(app)
    return SimpleNamespace(app=app, cfg=cfg, store=store, slack=slack)


@pytest.fixture
def bot(slack, store):
    return make_bot(slack, store, mute_users=["U0ALLOWED"], mute_usergroups=["S0NOC"])


_names = iter(range(1, 10**9))


def form(slack, command: str, text: str, *, user: str = "U0ALLOWED", name: str = "alice",
         response: str | None = None) -> tuple[str, str]:
    """A slash command's raw form body as Slack posts it, and its response_url name."""
    response = response or f"r{next(_names)}"
    body = urlencode({
        "token": "deprecated", "team_id": "T0STANDIN", "team_domain": "standin",
        "channel_id": "C0NOC", "channel_name": "noc", "user_id": user, "user_name": name,
        "command": command, "text": text, "api_app_id": "A0SENTINEL",
        "is_enterprise_install": "false", "response_url": slack.response_url(response),
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    })
    return body, response


def signed(body: str, *, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    ts_s = str(int(time.time()) if ts is None else ts)
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts_s,
            "X-Slack-Signature": SignatureVerifier(secret).generate_signature(
                timestamp=ts_s, body=body)}


def dispatch(app, body: str, headers: dict[str, str]):
    return app.dispatch(BoltRequest(body=body, headers=headers))


def ask(b, command: str, text: str, **kw) -> tuple[dict, str]:
    """Dispatch a signed command through the Bolt app: (ack body, response_url name)."""
    body, name = form(b.slack, command, text, **kw)
    resp = dispatch(b.app, body, signed(body))
    assert resp.status == 200, resp.body
    return (json.loads(resp.body) if resp.body else {}), name


def responses(slack, name: str, n: int = 1, timeout: float = 10.0) -> list[dict]:
    """The bodies POSTed to response_url `name`, once there are n of them."""
    deadline = time.time() + timeout
    while True:
        got = [c.body for c in slack.calls("response") if c.path == f"/response/{name}"]
        if len(got) >= n or time.time() > deadline:
            assert len(got) >= n, f"expected {n} responses on {name}, got {len(got)}"
            return got


def no_response(slack, name: str, wait: float = 0.4) -> bool:
    time.sleep(wait)
    return not [c for c in slack.calls("response") if c.path == f"/response/{name}"]


def unescaped(payload) -> list[str]:
    return re.findall(r"<[^>]{0,40}", json.dumps(payload, ensure_ascii=False))


def all_text(payload: dict) -> str:
    """Every string of a Slack payload, joined: what the user reads."""
    out = []

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            out.append(x)
    walk(payload)
    return "\n".join(out)


def header(payload: dict) -> str:
    return payload["blocks"][0]["text"]["text"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: str | bytes, headers: dict[str, str]) -> tuple[int, str]:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --------------------------------------------------------------------------- lookups

def test_every_registered_code_answers_with_its_reason_phrase(bot):
    codes = [c for c in KB.sip_codes() if c.registered]
    assert len(codes) == 75
    started = time.time()
    names = {}
    for c in codes:
        ack, name = ask(bot, "/sipcode", str(c.code))
        assert header(ack) == f"SIP {c.code} {c.phrase}"
        assert ack["response_type"] == "ephemeral"
        assert ack["text"].startswith(f"SIP {c.code} {c.phrase}")
        names[c.code] = name
    acked = time.time() - started
    assert acked < 5, f"75 acknowledgements took {acked:.1f} s"
    for code, name in names.items():                  # each followed by its live figures
        (live,) = responses(bot.slack, name)
        assert header(live) == f"Now: SIP {code} {KB.sip(code).phrase}"


def test_answer_carries_meaning_mappings_and_fixes(bot):
    ack, _ = ask(bot, "/sipcode", "486")
    text = all_text(ack)
    assert "486 → cause 17 User busy" in text                      # SIP -> Q.850
    assert "causes 17 User busy → 486" in text                     # Q.850 -> SIP
    assert "*Failover*\ncontinue" in text and "*Result category*\nbusy" in text
    assert "*NER*\neffective" in text and "*Registered*\nyes, IANA registry" in text
    assert "How to fix it on VOS3000" in text
    assert "Live figures from Sentinel's store follow" in text


def test_live_figures_follow_through_response_url(bot):
    Sentinel(bot.cfg, store=bot.store, sources=[], notifiers=[]).cycle(NOW_MS)
    ack, name = ask(bot, "/sipcode", "488")
    assert header(ack) == "SIP 488 Not Acceptable Here"
    (live,) = responses(bot.slack, name)
    assert live["response_type"] == "ephemeral" and live["replace_original"] is False
    text = all_text(live)
    assert "60 of 360 calls ended with it (16.7% of all calls)" in text
    assert "VEND-A: 50 calls, 26.3% of its 190 calls" in text
    assert "VEND-B: 10 calls, 9.1% of its 110 calls" in text
    assert "ACC-1: 30 calls" in text and "ACC-3: 20 calls" in text and "ACC-2: 10 calls" in text
    assert "same hour yesterday: 10 of 200 calls per hour (5.0%); share now ×3.3" in text
    assert "preceding 3 h, hourly average" in text
    assert "FIRING [warning] Codec mismatch on vendor VEND-A (488)" in text
    assert unescaped(live) == []


def test_end_reasons_of_all_three_forms(bot):
    bot.store.ingest("t", window_calls(NOW_MS, 60, {-9: 40}, caller_ip="203.0.113.66",
                                       ingress="CUST-SCAN"))
    ack, name = ask(bot, "/endreason", "-9")
    assert header(ack) == "End reason -9 Call from an unauthorized IP"
    text = all_text(responses(bot.slack, name)[0])
    assert "40 of 400 calls ended with it (10.0% of all calls)" in text
    assert "203.0.113.66: 40 calls" in text and "CUST-SCAN: 40 calls" in text
    ack, name = ask(bot, "/endreason", "8")
    assert header(ack) == "End reason 8 Balance Insufficient"
    assert "*Billable*\nno" in all_text(ack)
    assert "none of the 400 calls ended with it" in all_text(responses(bot.slack, name)[0])
    ack, name = ask(bot, "/endreason", "488")
    assert header(ack) == "End reason 488: SIP 488 Not Acceptable Here"
    assert "60 of 400 calls" in all_text(responses(bot.slack, name)[0])


def test_q850_live_figures_via_its_sip_code(bot):
    ack, name = ask(bot, "/q850", "65")
    assert header(ack) == "Q.850 cause 65: Bearer capability not implemented"
    assert "488 Not Acceptable Here" in all_text(ack)
    live = responses(bot.slack, name)[0]
    assert header(live) == "Now: SIP 488 Not Acceptable Here (via Q.850 cause 65)"
    text = all_text(live)
    assert "not by Q.850 cause" in text and "60 of 360 calls" in text
    ack, name = ask(bot, "/q850", "16")                 # maps to no SIP code: nothing follows
    assert "No live figures" in all_text(ack)
    assert no_response(bot.slack, name)


def test_near_miss_and_malformed_input(bot):
    ack, name = ask(bot, "/sipcode", "48")
    text = all_text(ack)
    assert all(f"{c} " in text for c in range(480, 490))
    assert no_response(bot.slack, name, wait=0.2)
    for bad in ("abc", "99999", "", "   "):
        ack, name = ask(bot, "/sipcode", bad)
        assert ack["response_type"] == "ephemeral" and "/sipcode" in all_text(ack)
    ack, _ = ask(bot, "/endreason", "")
    assert "/endreason" in all_text(ack)


HOSTILE = ["<!channel>", "<!here> 488", "&lt;!channel&gt;", "<@U0BOSS> 8",
           "<https://evil.example/login|click>", "x" * 5000, "<!channel>" * 600,
           "<!subteam^S0ALL|@noc>"]


@pytest.mark.parametrize("command", ["/sipcode", "/endreason", "/q850", "/sentinel"])
def test_hostile_input_notifies_no_one(bot, command):
    for text in HOSTILE:
        ack, name = ask(bot, command, text)
        assert unescaped(ack) == [], text
        assert len(json.dumps(ack)) < 8000
        assert ack.get("response_type", "ephemeral") == "ephemeral"
    time.sleep(0.3)
    for call in bot.slack.calls("response"):
        assert unescaped(call.body) == []


def test_hostile_mute_is_escaped_and_stored_as_typed(bot):
    _, name = ask(bot, "/sentinel",
                  "mute sip-488-codec <!channel> 1h -- <!here> see <https://evil.example|this>")
    (r,) = responses(bot.slack, name)
    assert unescaped(r) == []
    assert "&lt;!channel&gt;" in all_text(r) and "&lt;!here&gt;" in all_text(r)
    (s,) = bot.store.silences()
    assert s["grp"] == "<!channel>" and s["reason"] == "<!here> see <https://evil.example|this>"


# --------------------------------------------------------------------------- /sentinel

def test_status_rules_help(bot):
    Sentinel(bot.cfg, store=bot.store, sources=[], notifiers=[]).cycle(NOW_MS)
    ack, name = ask(bot, "/sentinel", "status")
    assert ack == {}                                    # acknowledged; the answer follows
    (r,) = responses(bot.slack, name)
    text = all_text(r)
    assert header(r) == "Sentinel status" and r["response_type"] == "ephemeral"
    assert "Sources:" in text and "Rules: 14 loaded" in text and "Alerts: " in text
    assert "sip-488-codec on VEND-A since" in text
    ack, _ = ask(bot, "/sentinel", "rules")
    text = all_text(ack)
    assert "14 rules loaded" in text and "`sip-503-share` [critical]" in text
    for t in ("help", "", "HELP", "frobnicate"):
        ack, _ = ask(bot, "/sentinel", t)
        assert header(ack) == "Sentinel commands"
    ack, _ = ask(bot, "/sentinel", "frobnicate")
    assert "I do not know “frobnicate”" in all_text(ack)


def test_mute_by_an_allowed_user(bot):
    ack, name = ask(bot, "/sentinel", "mute sip-488-codec VEND-A 2h -- codec change at vendor",
                    user="U0ALLOWED", name="alice")
    assert ack == {}
    (r,) = responses(bot.slack, name)
    assert r["response_type"] == "in_channel"           # the channel sees who muted what
    (s,) = bot.store.silences()
    assert (s["rule_id"], s["grp"], s["starts_ms"], s["ends_ms"]) == (
        "sip-488-codec", "VEND-A", NOW_MS, NOW_MS + 2 * 3_600_000)
    assert s["reason"] == "codec change at vendor"
    assert s["created_by"] == "slack:U0ALLOWED (alice)"
    text = all_text(r)
    assert f"Silence #{s['id']}: sip-488-codec on VEND-A is muted for 2h" in text
    assert "By alice" in text and "seen no traffic" not in text
    assert not bot.slack.calls("usergroups.users.list")  # listed user: no API call needed
    # quoted reason, no group, then unmute by rule
    _, name = ask(bot, "/sentinel", 'mute sip-503-share 30m "vendor maintenance"')
    responses(bot.slack, name)
    s2 = [x for x in bot.store.silences() if x["rule_id"] == "sip-503-share"][0]
    assert s2["grp"] is None and s2["reason"] == "vendor maintenance"
    _, name = ask(bot, "/sentinel", "unmute sip-503-share")
    assert "Silence #%d ended" % s2["id"] in all_text(responses(bot.slack, name)[0])
    _, name = ask(bot, "/sentinel", f"unmute #{s['id']}")
    assert responses(bot.slack, name)[0]["response_type"] == "in_channel"
    assert bot.store.silences() == []


def test_mute_allowed_through_a_user_group(bot):
    _, name = ask(bot, "/sentinel", "mute sip-503-share VEND-B 1h", user="U0GROUPIE",
                  name="bob")
    (r,) = responses(bot.slack, name)
    assert r["response_type"] == "in_channel"
    (s,) = bot.store.silences()
    assert s["created_by"] == "slack:U0GROUPIE (bob)"
    (call,) = bot.slack.calls("usergroups.users.list")
    assert _query(call)["usergroup"] == "S0NOC"
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"


def test_mute_refused_politely(bot):
    _, name = ask(bot, "/sentinel", "mute sip-503-share VEND-B 1h", user="U0STRANGER")
    (r,) = responses(bot.slack, name)
    assert r["response_type"] == "ephemeral" and header(r) == "Not allowed"
    assert "Sorry" in all_text(r)
    assert bot.store.silences() == []
    _, name = ask(bot, "/sentinel", "unmute 1", user="U0STRANGER")
    assert header(responses(bot.slack, name)[0]) == "Not allowed"
    # a user group that cannot be read: refused, and the reason is shown
    bot.slack.fail_next("usergroups.users.list", error="missing_scope")
    _, name = ask(bot, "/sentinel", "mute sip-503-share 1h", user="U0GROUPIE")
    assert "S0NOC: missing_scope" in all_text(responses(bot.slack, name)[0])
    assert bot.store.silences() == []


def test_nobody_may_mute_when_nobody_is_configured(slack, store):
    b = make_bot(slack, store)
    _, name = ask(b, "/sentinel", "mute sip-503-share 1h", user="U0ALLOWED")
    text = all_text(responses(slack, name)[0])
    assert "mute_users" in text and "mute_usergroups" in text
    assert store.silences() == []


def test_mute_input_errors(bot):
    cases = {
        "mute": "I need a rule",
        "mute sip-503-share": "I need a rule",
        "mute no-such-rule 1h": "There is no rule “no-such-rule”",
        "mute sip-503-share 30d": "longer than the 7d",
        'mute sip-503-share "VEND 1h': "a quote is not closed",
        "unmute": "Usage",
        "unmute 999": "No silence in force matches “999”",
    }
    for text, expected in cases.items():
        _, name = ask(bot, "/sentinel", text)
        (r,) = responses(bot.slack, name)
        assert r["response_type"] == "ephemeral"
        assert expected.replace("“", "“") in all_text(r), (text, all_text(r))
    assert bot.store.silences() == []
    _, name = ask(bot, "/sentinel", "mute sip-488-codec VEND-TYPO 1h")
    assert "seen no traffic or alert for “VEND-TYPO”" in all_text(responses(bot.slack, name)[0])


def test_parse_mute():
    assert parse_mute("r1 G1 2h -- why not") == MuteRequest("r1", "G1", 120, "why not")
    assert parse_mute("r1 2h") == MuteRequest("r1", None, 120, "")
    assert parse_mute('r1 "GW 7" 1d "long story"') == MuteRequest("r1", "GW 7", 1440,
                                                                   "long story")
    assert parse_mute("r1 G1 30m \u2014 em dash reason").reason == "em dash reason"
    assert parse_mute("r1 5m 2h").group == "5m"          # a group that looks like a duration
    with pytest.raises(ValueError):
        parse_mute("r1 G1 G2 1h")


# --------------------------------------------------------------------------- signatures

def test_requests_without_a_valid_signature_are_refused(bot):
    body, name = form(bot.slack, "/sipcode", "488")
    now = int(time.time())
    cases = {
        "wrong secret": signed(body, secret="not-the-secret"),
        "stale timestamp": signed(body, ts=now - 6 * 60),
        "future timestamp": signed(body, ts=now + 6 * 60),
        "no headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "no signature": {k: v for k, v in signed(body).items() if k != "X-Slack-Signature"},
        "no timestamp": {k: v for k, v in signed(body).items()
                         if k != "X-Slack-Request-Timestamp"},
    }
    for why, headers in cases.items():
        assert dispatch(bot.app, body, headers).status == 401, why
    tampered = body.replace("488", "503")
    assert dispatch(bot.app, tampered, signed(body)).status == 401
    assert dispatch(bot.app, body, signed(body, ts=now - 4 * 60)).status == 200
    time.sleep(0.3)
    assert len([c for c in bot.slack.calls("response") if c.path == f"/response/{name}"]) == 1


def test_http_server(bot):
    server = HttpServer(bot.app, "127.0.0.1", 0).start()
    try:
        url = server.url
        assert url.endswith("/slack/events")
        body, name = form(bot.slack, "/sipcode", "488")
        status, text = post(url, body, signed(body))
        assert status == 200
        ack = json.loads(text)
        assert header(ack) == "SIP 488 Not Acceptable Here"
        assert "60 of 360 calls" in all_text(responses(bot.slack, name)[0])
        assert post(url, body, signed(body, secret="wrong"))[0] == 401
        assert post(url, body, signed(body, ts=int(time.time()) - 301 - 60))[0] == 401
        assert post(url, body, {"Content-Type": "application/x-www-form-urlencoded"})[0] == 401
        assert post(url, b"x" * (70 * 1024), signed("x"))[0] == 413
        assert post(url.replace("/slack/events", "/other"), body, signed(body))[0] == 404
        assert get(url.replace("/slack/events", "/healthz")) == (200, "ok\n")
        # several at once: the server is threaded
        results = []

        def one(code):
            b, _ = form(bot.slack, "/sipcode", str(code))
            results.append(post(url, b, signed(b))[0])
        threads = [threading.Thread(target=one, args=(c,)) for c in (500, 502, 503, 504)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 4
    finally:
        server.stop()


def test_bolt_builtin_http_server(bot):
    port = free_port()
    t = threading.Thread(target=bot.app.start,
                         kwargs={"port": port, "http_server_logger_enabled": False}, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}/slack/events"
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.time() < deadline
                time.sleep(0.05)
        body, _ = form(bot.slack, "/endreason", "-9")
        status, text = post(url, body, signed(body))
        assert status == 200 and header(json.loads(text)).startswith("End reason -9")
        assert post(url, body, signed(body, secret="wrong"))[0] == 401
    finally:
        bot.app._development_server._server.shutdown()


# --------------------------------------------------------------------------- transports & settings

def test_socket_mode_handler_is_built_not_connected(slack, store):
    cfg = Config(store=":memory:", sources=[], bot={"api_url": slack.api_url})
    runner = BotRunner(cfg, store, env={**ENV, "SLACK_APP_TOKEN": "xapp-1-test"})
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    assert runner.mode == "socket" and runner.http is None
    assert isinstance(runner.socket, SocketModeHandler)
    assert runner.socket.app_token == "xapp-1-test"
    assert runner.socket.client.web_client.base_url == slack.api_url
    assert not runner.socket.client.is_connected()
    assert runner.describe() == "Socket Mode"
    # forced HTTP despite the app token
    http = BotRunner(cfg, store, env={**ENV, "SLACK_APP_TOKEN": "xapp-1-test"}, mode="http",
                     port=0)
    assert http.mode == "http" and http.http is not None
    http.http.httpd.server_close()


def test_socket_mode_requests_dispatch_unsigned(bot):
    """Socket Mode envelopes carry no signature; Bolt's adapter dispatches them as
    mode=socket_mode, which its verification middleware lets through."""
    from slack_bolt.adapter.socket_mode.internals import run_bolt_app
    from slack_sdk.socket_mode.request import SocketModeRequest
    body, name = form(bot.slack, "/sipcode", "503")
    payload = {k: v[0] for k, v in parse_qs(body).items()}
    resp = run_bolt_app(bot.app, SocketModeRequest(type="slash_commands", envelope_id="e1",
                                                   payload=payload))
    assert resp.status == 200 and header(json.loads(resp.body)) == "SIP 503 Service Unavailable"
    assert responses(bot.slack, name)
    # the same body over HTTP without a signature is refused
    assert dispatch(bot.app, body, {"Content-Type": "application/x-www-form-urlencoded"}
                    ).status == 401


def test_settings():
    s = BotSettings.from_table({"api_url": "http://127.0.0.1:9/api", "port": 8080,
                                "mute_users": ["U1ABC"], "max_mute": "1d",
                                "token_env": "NOC_SLACK_TOKEN"})
    assert s.api_url == "http://127.0.0.1:9/api/" and s.port == 8080 and s.max_mute_min == 1440
    with pytest.raises(ConfigError, match="unknown key 'tokn_env'"):
        BotSettings.from_table({"tokn_env": "X"})
    for bad in ({"mode": "carrier-pigeon"}, {"port": "80"}, {"mute_users": "U1"},
                {"mute_usergroups": ["not an id"]}, {"api_url": "slack.com"},
                {"max_mute": "forever"}, {"with_run": "yes"}, {"path": "events"}):
        with pytest.raises(ConfigError):
            BotSettings.from_table(bad)
    with pytest.raises(ConfigError, match="NOC_SLACK_TOKEN"):
        s.credentials({"SLACK_BOT_TOKEN": "xoxb-1"})             # renamed: the default is not read
    assert s.credentials({"NOC_SLACK_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}).mode == "http"
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        s.credentials({"NOC_SLACK_TOKEN": "xoxb-1"})             # HTTP needs the secret
    assert s.credentials({"NOC_SLACK_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}).mode == "socket"
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        BotSettings(mode="socket").credentials({"SLACK_BOT_TOKEN": "xoxb-1"})
    assert "xoxb" not in repr(s.credentials({"NOC_SLACK_TOKEN": "xoxb-1",
                                              "SLACK_SIGNING_SECRET": "s"}))


# --------------------------------------------------------------------------- beside `sentinel run`

def test_start_beside_the_scheduler(slack, tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    seed_store = Store(db)
    seed_store.ingest("t", window_calls(NOW_MS, 60, {200: 9, 488: 1}))
    seed_store.close()
    cfg = Config(store=str(db), sources=[],
                 bot={"api_url": slack.api_url, "host": "127.0.0.1", "port": 0})
    app = Sentinel(cfg, sources=[], notifiers=[])
    app.reload_rules()
    assert start_beside(Config(sources=[]), app) is None          # no [bot]: nothing
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    assert start_beside(cfg, app) is None                         # no token: logged, skipped
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    off = Config(store=str(db), sources=[], bot={**cfg.bot, "with_run": False})
    assert start_beside(off, app) is None
    handle = start_beside(cfg, app)
    try:
        assert handle.ready.wait(10) and handle.error is None
        assert handle.runner.app is not None and handle.runner.mode == "http"
        body, name = form(slack, "/sentinel", "rules")
        status, text = post(handle.runner.http.url, body, signed(body))
        assert status == 200 and "14 rules loaded" in text      # the running app's rules
        body, name = form(slack, "/sipcode", "488")
        assert post(handle.runner.http.url, body, signed(body))[0] == 200
        assert header(responses(slack, name)[0]) == "Now: SIP 488 Not Acceptable Here"
    finally:
        handle.stop()
        app.store.close()


# --------------------------------------------------------------------------- the terminal

def sentinel_cli(*args, cwd: Path, env: dict | None = None, **kw):
    e = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "sentinel", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def cli_home(tmp_path):
    """A config pointing at a store seeded with calls of the last half hour."""
    now = int(time.time() * 1000) // 60000 * 60000
    store = Store(tmp_path / "cdr.db")
    store.ingest("t", window_calls(now, 30, {200: 90, 488: 10}, egress="VEND-CLI",
                                   account="ACC-CLI"))
    store.ingest("t", window_calls(now, 30, {-9: 5}, caller_ip="198.51.100.99"))
    store.close()
    (tmp_path / "sentinel.toml").write_text('store = "cdr.db"\n')
    return tmp_path


def test_terminal_sipcode(cli_home):
    r = sentinel_cli("sipcode", "488", cwd=cli_home)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("SIP 488 Not Acceptable Here\n")
    assert "Q.850 → SIP (RFC 3398 7.2.4.1): causes 49" in out
    assert "How to fix it on VOS3000" in out
    assert "Now: SIP 488 Not Acceptable Here" in out
    assert "10 of 105 calls ended with it (9.5% of all calls)" in out
    assert "VEND-CLI: 10 calls, 10.0% of its 100 calls" in out
    assert "ACC-CLI: 10 calls" in out
    assert "sip-488-codec" in out
    r = sentinel_cli("-c", str(cli_home / "sentinel.toml"), "sipcode", "488", "--no-live",
                     cwd=cli_home.parent)
    assert r.returncode == 0 and "Now:" not in r.stdout


def test_terminal_endreason_and_q850(cli_home):
    r = sentinel_cli("endreason", "-9", cwd=cli_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("End reason -9 Call from an unauthorized IP")
    assert "5 of 105 calls ended with it" in r.stdout and "198.51.100.99: 5 calls" in r.stdout
    r = sentinel_cli("endreason", "8", cwd=cli_home)
    assert r.returncode == 0 and "Balance Insufficient" in r.stdout
    r = sentinel_cli("q850", "34", cwd=cli_home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Q.850 cause 34: No circuit/channel available")
    assert "Now: SIP 503 Service Unavailable (via Q.850 cause 34)" in r.stdout
    assert "not by Q.850 cause" in r.stdout


def test_terminal_bad_input_and_no_store(cli_home, tmp_path_factory):
    r = sentinel_cli("sipcode", "abc", cwd=cli_home)
    assert r.returncode == 1 and "Usage: `/sipcode <code>`" in r.stdout
    r = sentinel_cli("sipcode", "48", cwd=cli_home)
    assert r.returncode == 1 and "480 Temporarily Unavailable" in r.stdout
    empty = tmp_path_factory.mktemp("empty")
    (empty / "sentinel.toml").write_text('store = "none.db"\n')
    r = sentinel_cli("sipcode", "503", cwd=empty)
    assert r.returncode == 0 and "there is no store at" in r.stdout
    assert not (empty / "none.db").exists()                 # a lookup creates nothing


def test_sentinel_bot_command_serves_http(slack, cli_home):
    port = free_port()
    (cli_home / "sentinel.toml").write_text(
        f'store = "cdr.db"\n[bot]\napi_url = "{slack.api_url}"\nhost = "127.0.0.1"\n'
        f'port = {port}\nmute_users = ["U0ALLOWED"]\n')
    env = {**ENV, "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen([sys.executable, "-m", "sentinel", "bot"], cwd=cli_home,
                            env={**{k: v for k, v in os.environ.items() if k not in PROXY_VARS},
                                 **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                if get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "sentinel bot did not start"
            time.sleep(0.1)
        body, name = form(slack, "/sipcode", "488")
        status, text = post(f"http://127.0.0.1:{port}/slack/events", body, signed(body))
        assert status == 200 and header(json.loads(text)) == "SIP 488 Not Acceptable Here"
        assert "10 of 105 calls" in all_text(responses(slack, name)[0])
        assert post(f"http://127.0.0.1:{port}/slack/events", body,
                    signed(body, secret="x"))[0] == 401
        assert slack.calls("auth.test")                      # Bolt checked the token
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_sentinel_bot_command_without_token(cli_home):
    (cli_home / "sentinel.toml").write_text('store = "cdr.db"\n[bot]\nport = 0\n')
    e = {k: v for k, v in os.environ.items() if k not in ENV}
    r = subprocess.run([sys.executable, "-m", "sentinel", "bot"], cwd=cli_home, env=e,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "export SLACK_BOT_TOKEN" in r.stderr


def test_readme_notes_example_is_a_valid_bot_table():
    import tomllib
    from sentinel.cli import build_parser
    notes = (Path(__file__).resolve().parent.parent / "docs" / "bot.md")
    text = notes.read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    s = BotSettings.from_table(tomllib.loads(block)["bot"])
    assert s.mute_users == ("U0123ABCD",) and s.mute_usergroups == ("S0456NOC",)
    sub = build_parser()._subparsers._group_actions[0].choices
    for cmd in re.findall(r"^\| `sentinel (\w+)", text, re.M):
        assert cmd in sub
