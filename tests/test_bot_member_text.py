"""Hostile member text in every command: shown escaped, never formatted, never a ping, never a masked link.

Each test drives the real bot through the fake Discord and then checks every message the bot
sent or edited (content and every embed field, as Discord received them): `allowed_mentions`
is present and allows no @everyone/@here and no roles, users only where the bot pings the member
who asked; no raw mention, no masked link and no markdown of the member's survives outside code.
"""
from __future__ import annotations

import re
import time

import pytest

from bot import text
from bot.cogs import classify, find, gallery
from bot.jobstore import record_for
from jobs.schemas import ClassifyJob, Failed, FindJob, IndexJob
from tests.bot_harness import ScriptedWorker, harness, png_bytes  # noqa: F401
from tests.fake_discord import EPHEMERAL, PERM_MANAGE_GUILD, PERM_VIEW_SEND, Call

HOSTILE = "@everyone <@&123> <@456> [click](https://evil.example) **bold** `code` ||spoiler||"
# '|' separates weighted prompts, so a prompt carries strikethrough instead of a spoiler
PROMPT = "@everyone <@&123> <@456> [click](https://evil.example) **bold** `code` ~~gone~~"
RAW = ("@everyone", "@here", "<@&123>", "<@456>", "](https://evil.example)", "`code`")
MARKDOWN = ("**bold**", "||spoiler||", "~~gone~~")


def components_custom_ids(msg: dict) -> list[str]:
    return [c["custom_id"] for row in msg.get("components", []) for c in row.get("components", [])]


def message_payload(call: Call) -> dict | None:
    """The message body of a call that posts or edits a message; None for any other call."""
    j = call.json
    if not isinstance(j, dict) or call.method not in ("POST", "PATCH"):
        return None
    if "/callback" in call.path:
        j = j.get("data") or {}
    return j if ("content" in j or "embeds" in j) else None


def texts(body: dict) -> list[str]:
    out = [body.get("content") or ""]
    for e in body.get("embeds") or []:
        out += [e.get("title") or "", e.get("description") or "", (e.get("footer") or {}).get("text") or "",
                (e.get("author") or {}).get("name") or ""]
        for f in e.get("fields") or []:
            out += [f.get("name") or "", f.get("value") or ""]
    return out


def outside_code(s: str) -> str:
    """The text Discord renders as markdown: without ``` blocks and `inline code` spans."""
    s = re.sub(r"```.*?```", "", s, flags=re.S)
    return re.sub(r"(?<!\\)`[^`]*(?<!\\)`", "", s)


def shown(s: str) -> str:
    """Roughly what a member reads: escapes and zero-width breaks removed, look-alike backticks back."""
    return re.sub(r"\\(.)", r"\1", s.replace(text.ZWSP, "")).replace("\u02cb", "`")


def assert_safe(fake, pinged: set[int]) -> int:
    """Every message the bot sent or edited is safe; returns how many were checked."""
    checked = 0
    for call in fake.calls:
        body = message_payload(call)
        if body is None:
            continue
        checked += 1
        am = body.get("allowed_mentions")
        assert am is not None, f"no allowed_mentions (Discord's default pings everyone): {call!r}"
        assert am.get("parse") == [], call
        assert not am.get("roles"), call
        assert {int(u) for u in am.get("users", [])} <= pinged, call
        for s in texts(body):
            for raw in RAW:
                assert raw not in s, (raw, s, call)
            for md in MARKDOWN:
                assert md not in outside_code(s), (md, s, call)
    return checked


@pytest.fixture
async def worker(harness):
    w = ScriptedWorker(harness.queue).start()
    yield w
    await w.stop()


async def answer(fake, inter) -> str:
    """The first text the member got for an interaction (callback or webhook edit)."""
    call = await fake.wait_for(lambda: next((c for c in fake.responses(inter)
                                             if (message_payload(c) or {}).get("content")), None))
    return message_payload(call)["content"]


async def test_imagine_reroll_cancel_queue_top_and_hall_of_fame(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann, bob = fake.user("ann"), fake.user("bob")
    admin = fake.user("admin", PERM_VIEW_SEND | PERM_MANAGE_GUILD)
    hof = await fake.create_channel("hall-of-fame")
    await answer(fake, await fake.slash("config", admin, hall_of_fame_channel=hof, hall_of_fame_threshold=1))

    worker.hold.clear()
    inter = await fake.slash("imagine", ann, prompt=PROMPT)
    ack = await answer(fake, inter)
    assert PROMPT in shown(ack) and "Queued" in ack
    msg = await fake.wait_for(lambda: next((m for m in fake.channel_messages(via="channel")
                                            if "bold" in m["content"]), None))
    assert PROMPT in shown(msg["content"])
    queue_text = await answer(fake, await fake.slash("queue", ann))
    assert "imagine @" in shown(queue_text)
    worker.hold.set()
    final = await fake.wait_call("PATCH", rf"/channels/\d+/messages/{msg['id']}$", timeout=30,
                                 where=lambda c: any(f.filename == "imagine.png" for f in c.files))
    assert PROMPT in shown(final.json["content"])
    await fake.wait_for(lambda: fake.bot_reactions(msg["id"]) == ["👍", "👎"])

    # a vote: the hall-of-fame repost and /top show the prompt, and /top's link is the bot's own
    await fake.react(fake._message_json(int(msg["id"])), bob, "👍")
    post = await fake.wait_call("POST", rf"/channels/{hof}/messages")
    assert PROMPT in shown(post.json["embeds"][0]["description"])
    top = await fake.slash("top", bob)
    call = await fake.wait_call("POST", rf"/interactions/{top.id}/")
    desc = call.json["data"]["embeds"][0]["description"]
    assert f"](https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{msg['id']}) by <@{ann.id}>" in desc
    assert PROMPT[:60] in shown(desc)

    # Re-roll by another member, then cancel it with the button and with /cancel
    worker.hold.clear()
    stored = fake._message_json(int(msg["id"]))
    click = await fake.click(stored, components_custom_ids(stored)[0], bob)
    assert PROMPT in shown(await answer(fake, click))
    second = await fake.wait_for(lambda: next((m for m in fake.channel_messages(via="channel")
                                               if m["id"] != msg["id"] and "bold" in m["content"]), None))
    cancel = await fake.click(second, components_custom_ids(second)[0], bob)
    assert "Cancelling" in await answer(fake, cancel)
    worker.hold.set()
    await fake.wait_call("PATCH", rf"/channels/\d+/messages/{second['id']}$",
                         where=lambda c: "cancelled" in (c.json or {}).get("content", ""))
    bogus = "<@456> @everyone [x](https://evil.example)"
    refusal = await answer(fake, await fake.slash("cancel", bob, job=bogus))
    assert "There is no job" in refusal and bogus in shown(refusal)

    # /config echoes what a moderator typed: banned words and vote reactions
    described = await answer(fake, await fake.slash("config", admin, ban_word="@everyone", vote_down="[x](https://evil.example)"))
    assert "@everyone" in shown(described) and "[x](https://evil.example)" in shown(described)
    assert "does not allow" in await answer(fake, await fake.slash("imagine", ann, prompt="hi @everyone"))
    assert assert_safe(fake, pinged=set()) >= 15


async def test_classify_find_and_gallery(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    ann = fake.user("ann")
    # gallery: a member's message with a hostile caption
    post = fake.post_user_message(ann, HOSTILE, [fake.upload(png_bytes(), "art.png", "image/png", 64, 64)])
    added = await fake.wait_call("PATCH", rf"/webhooks/\d+/{(await fake.message_command('Add to gallery', ann, post)).token}/",
                                 where=lambda c: "Added" in (c.json or {}).get("content", ""))
    assert added.json["allowed_mentions"]["parse"] == []
    # /find: the query is echoed while searching and with the results; the caption is an embed
    inter = await fake.slash("find", ann, query=HOSTILE)
    searching = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                     where=lambda c: "Searching" in (c.json or {}).get("content", ""))
    assert HOSTILE in shown(searching.json["content"])
    res = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                               where=lambda c: bool((c.json or {}).get("embeds")))
    assert HOSTILE in shown(res.json["content"]) and HOSTILE in shown(res.json["embeds"][0]["description"])
    assert res.json["embeds"][0]["url"] == post_link(fake, post)  # the jump link still works
    # /classify: hostile labels and file name
    labels = "@everyone <@&123>, <@456> [click](https://evil.example), **bold** `code` ||spoiler||"
    att = fake.upload(png_bytes(), "**x**`y`.png", "image/png", 64, 64)
    inter = await fake.slash("classify", ann, image=att, labels=labels)
    queued = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                  where=lambda c: "Classifying" in (c.json or {}).get("content", ""))
    assert "**x**`y`.png" in shown(queued.json["content"])
    result = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                  where=lambda c: "```" in (c.json or {}).get("content", ""))
    chart = result.json["content"]
    assert "I think it is **@" in chart and "**bold** `code` ||spoiler||    █" in shown(chart)
    assert chart.count("```") == 2  # a label's backticks cannot end the chart's block
    # a late result goes to the channel and pings the member who asked, and only them
    worker.hold_fast.clear()
    inter = await fake.slash("find", ann, query=HOSTILE)
    await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/")
    job = await fake.wait_for(lambda: next((j for j in worker.seen if j.kind == "find" and j.id not in
                                            {s.id for s in worker.seen[:2]}), None))
    await harness.bot.records.update(job.id, created=time.time() - 16 * 60)
    worker.hold_fast.set()
    late = await fake.wait_call("POST", rf"/channels/{fake.channel_id}/messages",
                                where=lambda c: "best matches" in (c.json or {}).get("content", ""))
    assert late.json["allowed_mentions"] == {"parse": [], "users": [ann.id]}
    assert late.json["content"].startswith(f"<@{ann.id}>")
    assert assert_safe(fake, pinged={ann.id}) >= 8


def post_link(fake, post: dict) -> str:
    return f"https://discord.com/channels/{fake.guild_id}/{post['channel_id']}/{post['id']}"


@pytest.mark.parametrize("command,options,expected", [
    ("imagine", dict(prompt=PROMPT + ":inf"), "must be a finite number"),
    ("imagine", dict(prompt="a red circle", size="@everyone [x](https://evil.example)"), "not WIDTHxHEIGHT"),
    ("classify", dict(labels=HOSTILE.replace(",", "")), "at least 2 different labels"),
    ("classify", dict(labels="a, b", image=("**x**`@everyone`.txt", "text/plain")), "not an image"),
])
async def test_refusals_echo_member_text_escaped(harness, command, options, expected):
    await harness.start_bot()
    fake = harness.fake
    if command == "classify":
        name, ctype = options.pop("image", ("shape.png", "image/png"))
        options["image"] = fake.upload(b"x" if ctype != "image/png" else png_bytes(), name, ctype, 64, 64)
    inter = await fake.slash(command, fake.user("ann"), **options)
    refusal = await answer(fake, inter)
    assert expected in refusal and "@" in refusal  # the member's text is quoted back
    call = next(c for c in fake.responses(inter) if message_payload(c))
    assert (message_payload(call).get("flags", 0) & EPHEMERAL)
    assert_safe(fake, pinged=set())


def test_failure_reasons_are_escaped():
    """A worker's failure reason can quote the member's input: it is escaped in every result text."""
    reason = f"could not read {HOSTILE}"
    for module, job in ((classify, ClassifyJob(image="k", labels=["a", "b"], user=1)),
                        (find, FindJob(query="q", user=1)), (gallery, IndexJob(user=1, add=[]))):
        content, embeds = module.render_result(record_for(job, "x"), Failed(job_id=job.id, seq=0, reason=reason))
        assert reason in shown(content) and not embeds
        for raw in RAW:
            assert raw not in content
        for md in MARKDOWN:
            assert md not in content


@pytest.mark.parametrize("raw", [HOSTILE, PROMPT, "a\\*b", "[a]b](c)", "x" * 50, "@" * 40, "`" * 40, "<@1>" * 20])
@pytest.mark.parametrize("limit", [None, 1, 5, 17, 30])
def test_member_text_truncates_without_cutting_an_escape(raw, limit):
    for escape in (text.member_text, text.code_text):
        out = escape(raw, limit)
        assert limit is None or len(out) <= limit
        if limit is None or out == escape(raw):
            continue
        assert out.endswith(text.ELLIPSIS)
        body = out[:-1]
        assert any(body == escape(raw[:k]) for k in range(len(raw) + 1)), out  # a whole escaped prefix
        for bad in RAW:
            assert bad not in out


def test_member_text_keeps_links_and_plain_text_readable():
    assert text.member_text("a red circle") == "a red circle"
    assert text.member_text("see https://example.com/a_b") == "see https://example.com/a_b"
    assert text.member_text("[a](b) **c** (d)") == "\\[a\\]\u200b(b) \\*\\*c\\*\\* (d)"  # nothing inside a link is left
    assert text.emoji_text("<:party_blob:123456789012345678>") == "<:party_blob:123456789012345678>"
    assert text.emoji_text("@everyone") == "@\u200beveryone"
    assert text.message_link("https://discord.com/channels/1/2/3") == "https://discord.com/channels/1/2/3"
    assert text.message_link("https://evil.example/channels/1/2/3") is None
    assert text.user_mentions(5).to_dict() == {"parse": [], "users": [5]}
