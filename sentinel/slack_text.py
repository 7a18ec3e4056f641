"""Text for Slack: escaping and limits, shared by the notifier and the bot.

Every value that comes from CDRs or from a user (gateway and account names,
numbers, IPs, command text) goes through `escape` before it enters mrkdwn or
a message's top-level text, so `<!channel>` or `<https://evil|click>` shows as
text and notifies no one. Slack asks for exactly three replacements: `&`
first, then `<` and `>` (see ../shared/reference/slack-notes.md).
"""

from __future__ import annotations

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_FIELD_TEXT = 2000


def escape(value: object) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int, ellipsis: str = "…") -> str:
    """Cut to `limit` characters without leaving half an escape (&amp;) behind."""
    if len(text) <= limit:
        return text
    cut = text[:limit - len(ellipsis)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + ellipsis
