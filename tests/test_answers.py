"""The answers (sentinel.answers): content from the knowledge base, Slack limits,
escaping of everything echoed, and the plain-text rendering for the terminal."""

from __future__ import annotations

import json
import re

import pytest

from sentinel import answers, slack_text
from sentinel.answers import Answer, Section, lookup
from sentinel.knowledge import load_knowledge
from sentinel.rules import load_rules
from sentinel.config import default_rules_dir

KB = load_knowledge()

HOSTILE = [
    "<!channel>", "<!here> 488", "&lt;!channel&gt;", "<@U0BOSS>", "<!subteam^S0ALL>",
    "<https://evil.example/x|click me>", "488 <https://evil.example>", "x" * 5000,
    "4" * 5000, "-" + "9" * 4999, "<!channel>" * 500, "\x1b[31mred\x1b[0m",
]


def unescaped(payload) -> list[str]:
    """Every `<` that reached Slack unescaped (there should be none)."""
    text = json.dumps(payload, ensure_ascii=False)
    return re.findall(r"<[^>]{0,40}", text)


def check_limits(payload: dict) -> None:
    blocks = payload["blocks"]
    assert payload["text"] and len(payload["text"]) <= slack_text.MAX_SECTION_TEXT
    assert 1 <= len(blocks) <= slack_text.MAX_BLOCKS
    for b in blocks:
        if b["type"] == "header":
            assert b["text"]["type"] == "plain_text"
            assert len(b["text"]["text"]) <= slack_text.MAX_HEADER_TEXT
        elif b["type"] == "section":
            if "text" in b:
                assert len(b["text"]["text"]) <= slack_text.MAX_SECTION_TEXT
            assert len(b.get("fields", [])) <= 10
            for f in b.get("fields", []):
                assert len(f["text"]) <= slack_text.MAX_FIELD_TEXT
        elif b["type"] == "context":
            assert len(b["elements"]) <= slack_text.MAX_CONTEXT_ELEMENTS


def slack_text_of(a: Answer) -> str:
    return json.dumps(a.to_slack(), ensure_ascii=False)


@pytest.mark.parametrize("code", [c for c in KB.sip_codes()], ids=lambda c: str(c.code))
def test_every_sip_code_answers_with_its_phrase_within_limits(code):
    a, subject = lookup(KB, "sipcode", str(code.code))
    assert a.found and a.title == f"SIP {code.code} {code.phrase}"
    assert subject.codes == (code.code,)
    payload = a.to_slack()
    check_limits(payload)
    assert payload["blocks"][0]["text"]["text"] == f"SIP {code.code} {code.phrase}"
    text = a.to_text()
    assert f"{code.code} {code.phrase}" in text and code.result in text
    for fix in code.fixes:
        assert fix in text


def test_sip_answer_has_everything_an_engineer_needs():
    a, _ = lookup(KB, "sipcode", "488")
    fields = dict(f for s in a.sections for f in s.fields)
    assert fields["Class"] == "4xx client error"
    assert fields["Result category"] == "failed"
    assert fields["Registered"] == "yes, IANA registry (RFC 3261)"
    assert fields["ASR"] == "not answered"
    assert fields["NER"].startswith("ineffective")
    assert fields["SEER (RFC 6076)"] == "ineffective"
    assert fields["Failover"].startswith("continue")
    text = a.to_text()
    assert "How to fix it on VOS3000" in text
    assert "Compare the codec lists" in text
    unreg, _ = lookup(KB, "sipcode", "409")
    assert dict(f for s in unreg.sections for f in s.fields)["Registered"].startswith("no")


def test_rfc3398_mappings_both_ways():
    text = lookup(KB, "sipcode", "486")[0].to_text()
    assert "SIP → Q.850 (RFC 3398 8.2.6.1): 486 → cause 17 User busy" in text
    assert "Q.850 → SIP (RFC 3398 7.2.4.1): causes 17 User busy → 486" in text
    text = lookup(KB, "sipcode", "503")[0].to_text()
    assert "503 → cause 41" in text
    assert "34 No circuit/channel available" in text and "(by class)" in text
    # and from the Q.850 side
    text = lookup(KB, "q850", "17")[0].to_text()
    assert "Q.850 → SIP (RFC 3398 7.2.4.1)  486 Busy Here" in text
    assert "SIP → Q.850 (RFC 3398 8.2.6.1): 486 Busy Here, 600 Busy Everywhere → cause 17" in text
    assert "2 User Busy" in text                              # VOS end reason quoting it


def test_q850_live_figures_go_through_its_sip_code_and_say_so():
    a, subject = lookup(KB, "q850", "34")
    assert a.title == "Q.850 cause 34: No circuit/channel available"
    assert subject.codes == (503,)
    assert "not by Q.850 cause" in subject.note and "SIP 503" in subject.note
    assert "(via Q.850 cause 34)" in subject.label
    a, subject = lookup(KB, "q850", "16")
    assert subject is None and "No live figures" in a.to_text()
    a, subject = lookup(KB, "q850", "12")                   # not in the table
    assert subject is None and not a.found and "480 Temporarily Unavailable" in a.to_text()
    for bad in ("0x22", "128", "-1", "99999999"):
        a, subject = lookup(KB, "q850", bad)
        assert subject is None and not a.found


def test_end_reasons_of_all_three_forms():
    a, s = lookup(KB, "endreason", "486")                    # a SIP value
    assert a.title == "End reason 486: SIP 486 Busy Here" and s.codes == (486,)
    assert "`/sipcode 486`" in a.to_text() and "Busy Here" in a.to_text()
    a, s = lookup(KB, "endreason", "8")                      # a server reason 1-25
    assert a.title == "End reason 8 Balance Insufficient" and s.codes == (8,)
    fields = dict(f for sec in a.sections for f in sec.fields)
    assert fields["Form"] == "VOS3000 server end reason (1-25)"
    assert fields["Category"] == "Billing" and fields["Billable"] == "no"
    assert fields["SIP equivalent"].startswith("403 Forbidden")
    assert fields["Q.850 cause"].startswith("21 ")
    a, s = lookup(KB, "endreason", "-9")                     # a negative internal value
    assert a.title == "End reason -9 Call from an unauthorized IP" and s.codes == (-9,)
    assert dict(f for sec in a.sections for f in sec.fields)["Form"].startswith("VOS3000 internal")
    a, s = lookup(KB, "endreason", "-5")                     # an undocumented one
    assert "Unknown VOS internal reason -5" in a.title and s.codes == (-5,)
    for r in KB.end_reasons():
        a, s = lookup(KB, "endreason", str(r.raw))
        assert a.title == f"End reason {r.raw} {r.name}" and s.codes == (r.raw,)


def test_near_miss_suggests_the_closest_codes():
    a, s = lookup(KB, "sipcode", "48")
    assert s is None and not a.found
    listed = [ln.split()[0] for sec in a.sections if sec.bullets for ln in sec.lines]
    assert listed == [str(c) for c in range(480, 490)]
    a, s = lookup(KB, "sipcode", "4888")
    assert "488 Not Acceptable Here" in a.to_text()
    a, s = lookup(KB, "sipcode", "499")                      # in range, unknown
    assert s.codes == (499,) and "Known codes near it" in a.to_text()
    a, _ = lookup(KB, "sipcode", "busy")
    assert "486 Busy Here" in a.to_text() and "600 Busy Everywhere" in a.to_text()
    a, _ = lookup(KB, "endreason", "balance")
    assert "8 Balance Insufficient" in a.to_text()
    a, _ = lookup(KB, "sipcode", "-9")
    assert "/endreason -9" in a.to_text()


@pytest.mark.parametrize("text", ["", "   ", "abc", "99999", "0", "700", "+488", "4.88"])
def test_malformed_input_gets_a_helpful_answer(text):
    a, s = lookup(KB, "sipcode", text)
    assert s is None and not a.found
    assert "/sipcode" in a.to_text()
    check_limits(a.to_slack())


@pytest.mark.parametrize("command", answers.COMMANDS)
@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_is_escaped_and_clipped(command, text):
    a, _ = lookup(KB, command, text)
    payload = a.to_slack()
    check_limits(payload)
    assert unescaped(payload) == []
    assert len(json.dumps(payload)) < 6000                   # 5,000 characters are not echoed
    assert "\x1b" not in a.to_text()


def test_escaped_echo_shows_what_was_typed():
    a, _ = lookup(KB, "sipcode", "<!channel>")
    assert "“&lt;!channel&gt;”" in slack_text_of(a)
    a, _ = lookup(KB, "sipcode", "&lt;!channel&gt;")         # as Slack sends a typed <
    assert "“&lt;!channel&gt;”" in slack_text_of(a)
    assert "“<!channel>”" in a.to_text()


def test_long_answers_are_split_within_slack_limits():
    a = Answer("x" * 400, [Section("heading", ["line " + "y" * 200] * 1000, bullets=True),
                           Section(fields=[(f"k{i}", "v" * 3000) for i in range(25)]),
                           Section(lines=["z" * 5000], mono=True)],
               footer=[f"f{i}" for i in range(20)])
    payload = a.to_slack()
    check_limits(payload)
    assert payload["blocks"][-1]["type"] == "context"
    assert "cut here" in payload["blocks"][-1]["elements"][0]["text"]
    mono = [b for b in payload["blocks"] if "```" in b.get("text", {}).get("text", "")]
    assert all(b["text"]["text"].startswith("```") and b["text"]["text"].endswith("```")
               for b in mono)


def test_clip_never_leaves_half_an_escape():
    a = Answer("t", [Section(lines=["<" * 4000])])
    blocks = a.to_slack()["blocks"][1:]
    assert len(blocks) == 1 and blocks[0]["text"]["text"].endswith("…")   # one line: clipped
    for b in blocks:
        assert "&" not in re.sub(r"&(lt|gt|amp);", "", b["text"]["text"])


def test_help_rules_and_status_answers():
    text = answers.help_answer().to_text()
    for cmd in ("/sipcode", "/endreason", "/q850", "/sentinel status", "/sentinel mute",
                "/sentinel unmute", "/sentinel rules"):
        assert cmd in text
    loaded = load_rules(default_rules_dir())
    a = answers.rules_answer({r.id: r for r in loaded.rules}, loaded.errors)
    text = a.to_text()
    assert f"{len(loaded.rules)} rules loaded" in text
    assert "`sip-503-share` [critical]: share of SIP 503 per vendor gateway over 5m, " \
           "fires when > 10% and count >= 10" in text
    check_limits(a.to_slack())
    s = answers.status_answer("Sources:\n  x: FAILING <!channel>")
    assert unescaped(s.to_slack()) == []
    assert s.to_slack()["blocks"][1]["text"]["text"].startswith("```")


def test_clean_input():
    assert answers.clean_input("  a\u00a0 b\n c ") == "a b c"
    assert answers.clean_input("&lt;x&gt; &amp;amp;") == "<x> &amp;"
    assert answers.clean_input("\u201cvendor down\u201d \u2014 why") == '"vendor down" -- why'
    assert answers.clean_input(None) == ""
