from sentinel.slack_text import clip, escape


def test_escape_neutralises_mentions_and_links():
    assert escape("<!channel>") == "&lt;!channel&gt;"
    assert escape("<https://evil|click>") == "&lt;https://evil|click&gt;"
    assert escape("a & b") == "a &amp; b"
    assert escape("&lt;") == "&amp;lt;"           # & first, so nothing is double-read


def test_clip_never_splits_an_escape():
    text = escape("x" * 8 + "<tail>")             # xxxxxxxx&lt;tail&gt;
    assert clip(text, 10) == "xxxxxxxx…"
    assert clip("short", 10) == "short"
    assert len(clip("y" * 4000, 3000)) == 3000
