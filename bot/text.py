"""Member text made safe to show in the bot's messages: no markdown, no mentions, no masked links.

Whatever a member typed (a prompt, a label, a search, a file name, a contest theme, a gallery
caption) is shown as they typed it and can never format, ping or disguise a link as the bot:

    member_text(prompt, 200)   # in plain text, bold, embeds, masked-link labels
    code_text(label, 30)       # inside `inline code` or a ``` block, where backslashes show

Pings are also refused by `allowed_mentions` (none bot-wide, users only where a member is
pinged); escaping is the second guard, and what keeps `@everyone` from even *looking* like a
mention. Pure functions.
"""
from __future__ import annotations

import re

import discord
from discord.utils import escape_markdown, escape_mentions

ZWSP = "\u200b"  # invisible; breaks the syntax Discord would otherwise recognise
ELLIPSIS = "…"

# `<@id>`, `<@!id>`, `<@&id>` (any number of digits: Discord's own escape_mentions knows only
# 17-20), channel `<#id>` and command `</name:id>` mentions
_MENTION_SYNTAX = re.compile(r"<(?=[@#/])")
# a masked link needs `](` side by side
_MASKED_LINK = re.compile(r"\](?=\()")
_CUSTOM_EMOJI = re.compile(r"<a?:\w{2,32}:\d{1,25}>")
# the only links the bot shows as links: its own jump links, built from ids
_MESSAGE_LINK = re.compile(r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/channels/(?:\d+|@me)/\d+/\d+")


def _no_mentions(text: str) -> str:
    return _MENTION_SYNTAX.sub("<" + ZWSP, escape_mentions(text))


def _escape(text: str) -> str:
    # break masked links first: escape_markdown escapes a whole `[x](y)` with one backslash and
    # leaves the markdown inside it alone
    text = _MASKED_LINK.sub("]" + ZWSP, text)
    text = escape_markdown(text)  # also doubles existing backslashes, so the ones added below stay escapes
    text = text.replace("[", "\\[").replace("]", "\\]")  # a label inside the bot's own [label](link)
    return _no_mentions(text)


def _code(text: str) -> str:
    # no escapes work inside code: a look-alike of the backtick cannot end it
    return _no_mentions(_MASKED_LINK.sub("]" + ZWSP, text.replace("`", "\u02cb")))


def _fit(escape, text: str, limit: int | None) -> str:
    """escape(text), or escape() of the longest prefix that fits `limit` with an ellipsis: the
    raw text is cut, then escaped, so an escape is never cut in half."""
    out = escape(text)
    if limit is None or len(out) <= limit:
        return out
    if limit <= len(ELLIPSIS):
        return ELLIPSIS[:limit]
    lo, hi = 0, len(text)  # escape(text[:lo]) + ELLIPSIS fits; escape(text[:hi]) + ELLIPSIS does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(escape(text[:mid])) + len(ELLIPSIS) <= limit:
            lo = mid
        else:
            hi = mid
    return escape(text[:lo]) + ELLIPSIS


def member_text(text: str | None, limit: int | None = None) -> str:
    """`text` escaped for markdown and mentions, at most `limit` characters (None: no limit)."""
    return _fit(_escape, text or "", limit)


def code_text(text: str | None, limit: int | None = None) -> str:
    """`text` for inside inline code or a code block: backticks replaced, mentions and links broken."""
    return _fit(_code, text or "", limit)


def emoji_text(text: str | None) -> str:
    """A reaction emoji as configured: a custom emoji `<:name:id>` as it is (so it renders),
    anything else as member text."""
    text = text or ""
    return text if _CUSTOM_EMOJI.fullmatch(text) else member_text(text, 64)


def message_link(url: str | None) -> str | None:
    """`url` when it is a Discord message link (the jump links the bot stores), else None: a
    stored link is shown as a link only in that shape."""
    return url if url and _MESSAGE_LINK.fullmatch(url) else None


def user_mentions(*user_ids: int) -> discord.AllowedMentions:
    """Allowed mentions that ping exactly these members: no @everyone, no roles, no reply ping."""
    return discord.AllowedMentions(everyone=False, roles=False, replied_user=False,
                                   users=[discord.Object(uid) for uid in user_ids])
