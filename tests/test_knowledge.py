"""The knowledge base: SIP codes, VOS3000 end reasons, Q.850 causes, VQManager codes.

Expected values are written out here from the sources (IANA SIP Response Codes registry,
RFC 3398, the seed documents, shared/reference/kpis.md), not read back from the data files.
"""

from __future__ import annotations

import dataclasses

import pytest

from sentinel.knowledge import (EndReason, Knowledge, KnowledgeError, Q850Cause, SipCode,
                                VQStatus, load_knowledge)


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return load_knowledge()


# Every code in the IANA "Session Initiation Protocol (SIP) Parameters - Response Codes" registry.
IANA_CODES = [
    100, 180, 181, 182, 183, 199,
    200, 202, 204,
    300, 301, 302, 305, 380,
    400, 401, 402, 403, 404, 405, 406, 407, 408, 410, 412, 413, 414, 415, 416, 417,
    420, 421, 422, 423, 424, 425, 428, 429, 430, 433, 436, 437, 438, 439, 440, 469, 470,
    480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 491, 493, 494,
    500, 501, 502, 503, 504, 505, 513, 555, 580,
    600, 603, 604, 606, 607, 608,
]

# A sample of phrases and defining RFCs, as the registry gives them.
IANA_SAMPLE = {
    100: ("Trying", "RFC 3261"),
    183: ("Session Progress", "RFC 3261"),
    199: ("Early Dialog Terminated", "RFC 6228"),
    200: ("OK", "RFC 3261"),
    202: ("Accepted (Deprecated)", "RFC 6665"),
    204: ("No Notification", "RFC 5839"),
    302: ("Moved Temporarily", "RFC 3261"),
    380: ("Alternative Service", "RFC 3261"),
    403: ("Forbidden", "RFC 3261"),
    404: ("Not Found", "RFC 3261"),
    408: ("Request Timeout", "RFC 3261"),
    412: ("Conditional Request Failed", "RFC 3903"),
    414: ("Request-URI Too Long", "RFC 3261"),
    417: ("Unknown Resource-Priority", "RFC 4412"),
    421: ("Extension Required", "RFC 3261"),
    422: ("Session Interval Too Small", "RFC 4028"),
    423: ("Interval Too Brief", "RFC 3261"),
    424: ("Bad Location Information", "RFC 6442"),
    425: ("Bad Alert Message", "RFC 8876"),
    428: ("Use Identity Header", "RFC 8224"),
    429: ("Provide Referrer Identity", "RFC 3892"),
    430: ("Flow Failed", "RFC 5626"),
    433: ("Anonymity Disallowed", "RFC 5079"),
    436: ("Bad Identity Info", "RFC 8224"),
    437: ("Unsupported Credential", "RFC 8224"),
    438: ("Invalid Identity Header", "RFC 8224"),
    439: ("First Hop Lacks Outbound Support", "RFC 5626"),
    440: ("Max-Breadth Exceeded", "RFC 5393"),
    469: ("Bad Info Package", "RFC 6086"),
    470: ("Consent Needed", "RFC 5360"),
    481: ("Call/Transaction Does Not Exist", "RFC 3261"),
    486: ("Busy Here", "RFC 3261"),
    487: ("Request Terminated", "RFC 3261"),
    488: ("Not Acceptable Here", "RFC 3261"),
    489: ("Bad Event", "RFC 6665"),
    491: ("Request Pending", "RFC 3261"),
    493: ("Undecipherable", "RFC 3261"),
    494: ("Security Agreement Required", "RFC 3329"),
    500: ("Server Internal Error", "RFC 3261"),
    503: ("Service Unavailable", "RFC 3261"),
    504: ("Server Time-out", "RFC 3261"),
    555: ("Push Notification Service Not Supported", "RFC 8599"),
    580: ("Precondition Failure", "RFC 3312"),
    600: ("Busy Everywhere", "RFC 3261"),
    603: ("Decline", "RFC 3261"),
    604: ("Does Not Exist Anywhere", "RFC 3261"),
    606: ("Not Acceptable", "RFC 3261"),
    607: ("Unwanted", "RFC 8197"),
    608: ("Rejected", "RFC 8688"),
}


# ------------------------------------------------------------------ SIP codes

def test_every_iana_code_is_present_and_marked_registered(kb):
    missing = [c for c in IANA_CODES if kb.sip(c) is None]
    assert missing == []
    assert len(IANA_CODES) == 75
    registered = {c.code for c in kb.sip_codes() if c.registered}
    assert registered == set(IANA_CODES)


@pytest.mark.parametrize("code,expected", sorted(IANA_SAMPLE.items()))
def test_registry_phrase_and_rfc(kb, code, expected):
    phrase, rfc = expected
    sc = kb.sip(code)
    assert (sc.phrase, sc.rfc) == (phrase, rfc)


def test_codes_from_rfc_2543_are_known_but_not_registered(kb):
    assert kb.sip(409).phrase == "Conflict" and not kb.sip(409).registered
    assert kb.sip(411).phrase == "Length Required" and not kb.sip(411).registered
    assert "2543" in kb.sip(409).rfc
    # old names are searchable
    assert kb.nearest_sip("Call Leg")[0].code == 481


def test_sip_codes_sorted_and_fully_described(kb):
    codes = kb.sip_codes()
    assert [c.code for c in codes] == sorted(c.code for c in codes)
    for c in codes:
        assert c.klass == f"{c.code // 100}xx"
        assert c.phrase and c.meaning, c.code
        assert c.failover in ("continue", "stop")
        if c.code >= 300:
            assert c.fixes, f"{c.code} has no fixes"


def test_call_result_categories_follow_seed_001(kb):
    expected = {200: "answered", 486: "busy", 600: "busy", 403: "rejected", 603: "rejected",
                408: "timeout", 487: "cancelled", 480: "unavailable", 503: "unavailable",
                404: "failed", 488: "failed", 500: "failed", 604: "failed",
                180: "provisional", 183: "provisional", 302: "redirected"}
    assert {c: kb.sip(c).result for c in expected} == expected


def test_kpi_flags(kb):
    codes = kb.sip_codes()
    assert {c.code for c in codes if c.asr_success} == {200, 202, 204}
    assert {c.code for c in codes if c.seer_effective} == {200, 480, 486, 600, 603}
    assert {c.code for c in codes if c.isa} == {408, 500, 503, 504}
    ner = {c.code for c in codes if c.ner_effective}
    # the seed-000 user refusals count, failures of the network do not
    assert {200, 486, 600, 480, 603} <= ner
    assert not ner & {404, 408, 487, 488, 500, 502, 503, 504}
    # NER can never fall below ASR
    assert all(c.ner_effective for c in codes if c.asr_success)


def test_6xx_stop_failover_and_486_notes_busy_stop_switch(kb):
    for c in kb.sip_codes():
        if c.code >= 600:
            assert c.failover == "stop", c.code
    assert kb.sip(503).failover == "continue"
    assert kb.sip(486).failover == "continue"
    assert "busy stop switch" in kb.sip(486).failover_note


def test_seed_002_advice_is_there(kb):
    assert any("Replace Failed Reason" in f for f in kb.sip(503).fixes)
    assert any("allow-list" in f or "whitelist" in f.lower() for f in kb.sip(403).fixes)
    assert any("codec" in f.lower() for f in kb.sip(488).fixes)


# ------------------------------------------------------------------ RFC 3398

# Section 7.2.4.1, ISUP cause -> SIP, as listed in shared/reference/kpis.md.
CAUSE_TO_SIP = {
    1: 404, 2: 404, 3: 404, 17: 486, 18: 408, 19: 480, 20: 480, 21: 403, 22: 410, 23: 410,
    26: 404, 27: 502, 28: 484, 29: 501, 31: 480, 34: 503, 38: 503, 41: 503, 42: 503, 47: 503,
    55: 403, 57: 403, 87: 403, 58: 503, 65: 488, 70: 488, 79: 501, 88: 503, 102: 504,
    111: 500, 127: 500,
}
# Section 8.2.6.1, SIP -> ISUP cause, as listed in shared/reference/kpis.md.
SIP_TO_CAUSE = {
    400: 41, 401: 21, 402: 21, 403: 21, 407: 21, 404: 1, 405: 63, 406: 79, 408: 102, 410: 22,
    413: 127, 414: 127, 416: 127, 420: 127, 421: 127, 423: 127, 415: 79, 480: 18, 481: 41,
    482: 25, 483: 25, 484: 28, 485: 1, 486: 17, 500: 41, 501: 79, 502: 38, 503: 41, 504: 102,
    505: 127, 513: 127, 600: 17, 603: 21, 604: 1,
}


@pytest.mark.parametrize("cause,sip", sorted(CAUSE_TO_SIP.items()))
def test_rfc3398_cause_to_sip(kb, cause, sip):
    c = kb.q850(cause)
    assert c.sip == sip
    assert not c.sip_by_class
    assert cause in kb.sip(sip).q850_in          # the inverse list, computed by the loader


@pytest.mark.parametrize("sip,cause", sorted(SIP_TO_CAUSE.items()))
def test_rfc3398_sip_to_cause(kb, sip, cause):
    assert kb.sip(sip).q850_out == cause


def test_rfc3398_codes_without_a_cause(kb):
    assert kb.sip(487).q850_out is None
    assert kb.sip(488).q850_out is None and "Warning" in kb.sip(488).q850_note
    assert kb.sip(606).q850_out is None
    assert kb.q850(16).sip is None               # normal clearing: BYE/CANCEL, no response


def test_unlisted_causes_take_their_class_default(kb):
    expected = {4: 480, 24: 480, 44: 503, 50: 488, 66: 501, 95: 400, 97: 400}
    for cause, sip in expected.items():
        c = kb.q850(cause)
        assert (c.sip, c.sip_by_class) == (sip, True), cause
    assert kb.q850(44).klass == "resource unavailable"


def test_q850_catalogue(kb):
    causes = [c.cause for c in kb.q850_causes()]
    assert causes == sorted(causes)
    assert {1, 16, 17, 18, 19, 21, 31, 34, 41, 42, 47, 63, 79, 88, 102, 111, 127} <= set(causes)
    assert kb.q850(17).name == "User busy"
    assert kb.q850(16).name == "Normal call clearing"
    assert kb.q850(42).name == "Switching equipment congestion"
    assert kb.q850(127).name == "Interworking, unspecified"
    assert {c.cause for c in kb.q850_causes() if c.effective} == {16, 17, 18, 19, 21}
    assert kb.q850(12) is None and kb.q850(200) is None


# ------------------------------------------------------------------ end reasons

SEED_004 = {
    1: ("Normal Clearing", "Normal"), 2: ("User Busy", "Normal"), 3: ("No Answer", "Normal"),
    4: ("Unallocated Number", "Number Error"), 5: ("Network Congestion", "Network"),
    6: ("Route Not Found", "Routing"), 7: ("Rate Not Found", "Billing"),
    8: ("Balance Insufficient", "Billing"), 9: ("Account Expired", "Account"),
    10: ("Account Disabled", "Account"), 11: ("Caller Hangup", "Normal"),
    12: ("Callee Hangup", "Normal"), 13: ("Server Forced Release", "System"),
    14: ("Session Timeout", "Timeout"), 15: ("Media Timeout", "Timeout"),
    16: ("Authentication Failed", "Security"), 17: ("Unauthorized IP", "Security"),
    18: ("Concurrent Limit Exceeded", "Capacity"), 19: ("CPS Limit Exceeded", "Capacity"),
    20: ("Blacklist Match", "Security"), 21: ("Gateway Unavailable", "Routing"),
    22: ("No Available Route", "Routing"), 23: ("Call Rejected", "Network"),
    24: ("Prepaid Duration Exceeded", "Billing"), 25: ("Service Not Subscribed", "Account"),
}


def test_all_25_server_end_reasons(kb):
    got = {r: (kb.end_reason(r).name, kb.end_reason(r).category) for r in SEED_004}
    assert got == SEED_004
    assert all(kb.end_reason(r).kind == "server" for r in SEED_004)


def test_end_reason_three_forms(kb):
    sip = kb.end_reason(503)
    assert (sip.kind, sip.name, sip.sip.code, sip.q850) == ("sip", "Service Unavailable", 503, 41)
    assert sip.category == "Unavailable" and sip.billable is False

    billing = kb.end_reason(8)
    assert (billing.kind, billing.name, billing.category) == ("server", "Balance Insufficient", "Billing")
    assert billing.billable is False
    assert billing.sip.code == 403 and billing.q850 == 21       # seed 004 correspondence

    scanner = kb.end_reason(-9)
    assert (scanner.kind, scanner.category) == ("internal", "Security")
    assert "unauthorized IP" in scanner.name

    odd = kb.end_reason(-12345)
    assert (odd.kind, odd.name, odd.category) == (
        "internal", "Unknown VOS internal reason -12345", "Unknown")

    zero = kb.end_reason(0)
    assert zero.kind == "unknown" and zero.category == "Unknown"
    assert kb.end_reason(None).kind == "unknown"
    assert kb.end_reason(99).kind == "unknown"


def test_end_reason_details(kb):
    assert kb.end_reason(-7).name == "Undocumented VOS internal reason -7"
    assert kb.end_reason(-69).category == "Unknown"
    assert kb.end_reason(1).billable is True and kb.end_reason(1).sip.code == 200
    assert kb.end_reason(24).billable is True                     # partial billing
    assert kb.end_reason(7).billable is False
    assert kb.end_reason(2).sip.code == 486 and kb.end_reason(2).q850 == 17
    assert kb.end_reason(17).impact == "Critical"
    assert kb.end_reason(200).billable is True
    assert kb.end_reason("486").name == "Busy Here"
    # a SIP code nobody registered still decodes as SIP, by its class
    odd = kb.end_reason(499)
    assert odd.kind == "sip" and odd.sip.klass == "4xx" and odd.sip.result == "failed"
    assert kb.sip(499) is None


def test_vqmanager_codes(kb):
    expected = {2002: "Invite", 2004: "Cancel", 1010: "Registering", 1011: "Registered",
                1012: "UnRegistering", 1013: "UnRegistered", 999: "Active", 1000: "Completed",
                8000: "Marked as Unmonitored By User", 8001: "Unmonitored due to Server Restart",
                8002: "Unmonitored due to Sniffer Restart",
                8003: "Unmonitored due to no media transmission",
                8004: "Unmonitored due to licensing", 8100: "Media Transmission Stopped"}
    assert {c: kb.vqmanager(c).name for c in expected} == expected
    assert all(kb.vqmanager(c).description for c in expected)
    assert kb.vqmanager(486) is None


# ------------------------------------------------------------------ lookups

def test_nearest_sip(kb):
    assert [c.code for c in kb.nearest_sip("48")] == list(range(480, 490))
    fours = kb.nearest_sip("4", limit=100)
    assert {c.code for c in fours} >= set(c for c in IANA_CODES if 400 <= c < 500)
    assert all(400 <= c.code < 500 for c in fours)
    assert len(kb.nearest_sip("4")) == 12
    typo = [c.code for c in kb.nearest_sip("4888")]
    assert typo[0] == 488 and set(typo[1:3]) == {487, 489}
    assert [c.code for c in kb.nearest_sip("busy")] == [486, 600]
    assert kb.nearest_sip("") == []


def test_records_are_frozen_and_sources_named(kb):
    with pytest.raises(dataclasses.FrozenInstanceError):
        kb.sip(200).phrase = "Nope"  # type: ignore[misc]
    assert isinstance(kb.end_reason(8), EndReason) and isinstance(kb.q850(17), Q850Cause)
    assert isinstance(kb.sip(200), SipCode) and isinstance(kb.vqmanager(999), VQStatus)
    assert set(kb.sources) == {"sip_codes.toml", "q850.toml", "end_reasons.toml", "vqmanager.toml"}
    assert "IANA" in kb.sources["sip_codes.toml"] and "3398" in kb.sources["sip_codes.toml"]
    assert "004_9bb15847bc5f1596" in kb.sources["end_reasons.toml"]
    assert "Q.850" in kb.sources["q850.toml"]


def test_default_load_is_cached(kb):
    assert load_knowledge() is kb


# ------------------------------------------------------------------ user files

def test_extra_file_overrides_and_extends(kb, tmp_path):
    extra = tmp_path / "ours.toml"
    extra.write_text(
        '[meta]\nsources = "our NOC notes"\n\n'
        '[end_reason."8"]\nfixes = ["Call the account manager"]\n\n'
        '[end_reason."-42"]\nname = "Callee gateway refused media"\ncategory = "Media"\n'
        'meaning = "Learned from our logs."\n\n'
        '[sip.503]\nfixes = ["Page the carrier desk"]\n\n'
        '[q850.35]\nname = "Call queued (ANSI)"\n',
        encoding="utf-8")
    mine = load_knowledge(extra_files=[extra])
    assert mine is not kb

    eight = mine.end_reason(8)
    assert eight.fixes == ("Call the account manager",)
    assert eight.name == "Balance Insufficient" and eight.sip.code == 403   # other fields kept

    new = mine.end_reason(-42)
    assert (new.kind, new.name, new.category) == ("internal", "Callee gateway refused media", "Media")

    assert mine.sip(503).fixes == ("Page the carrier desk",)
    assert mine.sip(503).phrase == "Service Unavailable"
    assert mine.end_reason(503).fixes == ("Page the carrier desk",)
    assert mine.q850(35).sip == 503 and mine.q850(35).sip_by_class     # class default
    assert mine.sources[str(extra)] == "our NOC notes"

    # the shared default is untouched
    assert load_knowledge().end_reason(8).fixes != eight.fixes
    assert load_knowledge().end_reason(-42).name == "Unknown VOS internal reason -42"


def test_broken_extra_file_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('[end_reason."8"]\nfixes = ["ok"]\nname = "unterminated\n', encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(extra_files=[bad])
    assert "broken.toml" in str(err.value)
    assert "line 3" in str(err.value)
    assert err.value.line == 3 and err.value.path == str(bad)


@pytest.mark.parametrize("body,message", [
    ('[end_reason."8"]\nfixes = "not a list"\n', "fixes"),
    ('[end_reason."8"]\ncolour = "red"\n', "unknown field 'colour'"),
    ('[end_reason."-5"]\nmeaning = "no name"\n', "lacks name"),
    ('[end_reason."486"]\nname = "busy"\n', "[sip.486]"),
    ('[sip.abc]\nphrase = "x"\n', "integer"),
    ('[sip.486]\nfailover = "maybe"\n', "failover"),
    ('[weather.1]\nname = "x"\n', "unknown table"),
])
def test_wrong_shapes_are_refused(tmp_path, body, message):
    bad = tmp_path / "shape.toml"
    bad.write_text("# a comment\n\n" + body, encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(extra_files=[bad])
    assert "shape.toml" in str(err.value)
    assert message in str(err.value)
    assert err.value.line == 3


def test_missing_extra_file(tmp_path):
    with pytest.raises(KnowledgeError, match="nowhere.toml"):
        load_knowledge(extra_files=[tmp_path / "nowhere.toml"])
