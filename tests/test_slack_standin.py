"""The stand-in answers the real slack_sdk client as Slack would."""

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from .slack_standin import SlackStandIn


@pytest.fixture
def slack(monkeypatch):
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    with SlackStandIn() as s:
        yield s


def test_post_update_upload_and_forced_errors(slack):
    client = WebClient(token="xoxb-test", base_url=slack.api_url)
    assert client.auth_test()["user_id"] == slack.bot_user_id
    r = client.chat_postMessage(channel="C1", text="hello")
    client.chat_update(channel="C1", ts=r["ts"], text="bye")
    assert slack.calls("chat.postMessage")[0].body["text"] == "hello"
    assert slack.calls("chat.update")[0].body["ts"] == r["ts"]
    assert slack.calls("chat.postMessage")[0].headers["Authorization"] == "Bearer xoxb-test"
    up = client.files_upload_v2(channel="C1", content=b"\x89PNG...", filename="c.png",
                                thread_ts=r["ts"])
    assert up["ok"] and len(slack.calls("upload")) == 1
    slack.fail_next("chat.postMessage", error="channel_not_found")
    with pytest.raises(SlackApiError) as e:
        client.chat_postMessage(channel="C404", text="x")
    assert e.value.response["error"] == "channel_not_found"
    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "3"})
    with pytest.raises(SlackApiError) as e:
        client.chat_postMessage(channel="C1", text="x")
    assert e.value.response.status_code == 429 and e.value.response.headers["retry-after"] == "3"
