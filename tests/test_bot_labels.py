"""Label sets (/labels save|list|delete), /classify with a labelset, the "Classify" message menu:
through the real bot, the fake Discord, a real Redis and the scripted worker."""
import pytest

from tests.bot_harness import ScriptedWorker, harness, png_bytes  # noqa: F401
from tests.fake_discord import EPHEMERAL, PERM_MANAGE_GUILD, PERM_VIEW_SEND
from tests.test_bot_refusals import assert_nothing_queued, refusal


@pytest.fixture
async def worker(harness):
    w = ScriptedWorker(harness.queue).start()
    yield w
    await w.stop()


async def answer(h, inter) -> str:
    call = await h.fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert call.json["data"]["flags"] & EPHEMERAL
    return call.json["data"]["content"]


def classify_jobs(worker):
    return [j for j in worker.seen if j.kind == "classify"]


async def test_label_sets_save_list_delete_and_default(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin = fake.user("admin", PERM_VIEW_SEND | PERM_MANAGE_GUILD)
    ann = fake.user("ann")
    text = await answer(harness, await fake.slash("labels list", ann))
    assert "no label sets yet" in text
    # 1,000 labels through a file, one per line
    many = "\n".join(f"thing {i}" for i in range(1000)).encode()
    att = fake.upload(many, "things.txt", "text/plain")
    text = await answer(harness, await fake.slash("labels save", admin, name="things", file=att))
    assert "**things** (1000 labels)" in text and "default" in text  # the first saved is the default
    text = await answer(harness, await fake.slash("labels save", admin, name="shapes",
                                                  labels="red circle, blue square, green star"))
    assert "(3 labels)" in text and "default" not in text
    text = await answer(harness, await fake.slash("labels list", ann))
    assert text.split("\n")[0].startswith("**things** (default) — 1000 labels: thing 0, thing 1")
    assert text.split("\n")[1].startswith("**shapes** — 3 labels")
    await answer(harness, await fake.slash("labels save", admin, name="shapes", labels="a, b", default=True))
    text = await answer(harness, await fake.slash("labels list", ann))
    assert "**shapes** (default) — 2 labels" in text
    text = await answer(harness, await fake.slash("labels delete", admin, name="shapes"))
    assert "Deleted the label set **shapes**" in text and "default set is now **things**" in text
    # members without Manage Server may list but not change
    assert "Manage Server" in await refusal(harness, await fake.slash("labels save", ann, name="x", labels="a, b"))
    assert "no label set named" in await refusal(harness, await fake.slash("labels delete", admin, name="nope"))
    assert "not both" in await refusal(harness, await fake.slash("labels save", admin, name="x"))
    assert "at least 2" in await refusal(harness, await fake.slash("labels save", admin, name="x", labels="one"))
    assert "name is 1 to 32" in await refusal(harness, await fake.slash("labels save", admin, name="@everyone",
                                                                      labels="a, b"))


async def test_classify_with_a_label_set_and_the_default(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin = fake.user("admin", PERM_VIEW_SEND | PERM_MANAGE_GUILD)
    ann = fake.user("ann")
    image = lambda: fake.upload(png_bytes(), "shape.png", "image/png", 64, 64)  # noqa: E731
    # no set yet: a clear private answer, nothing queued
    assert "no label set yet" in await refusal(harness, await fake.slash("classify", ann, image=image()))
    assert "no label set named **zoo**" in await refusal(
        harness, await fake.slash("classify", ann, image=image(), labelset="zoo"))
    assert "not both" in await refusal(harness, await fake.slash("classify", ann, image=image(), labels="a, b",
                                                                 labelset="zoo"))
    await assert_nothing_queued(harness)
    labels = [f"animal {i}" for i in range(300)]
    await answer(harness, await fake.slash("labels save", admin, name="zoo", labels=", ".join(labels)))
    inter = await fake.slash("classify", ann, image=image(), labelset="ZOO")  # names match case-insensitively
    final = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                 where=lambda c: "```" in (c.json or {}).get("content", ""))
    assert classify_jobs(worker)[0].labels == labels
    assert "**animal 0**" in final.json["content"] and "(best 10 of 300 labels)" in final.json["content"]
    inter = await fake.slash("classify", ann, image=image())  # neither labels nor a set: the default
    await fake.wait_for(lambda: len(classify_jobs(worker)) == 2)
    assert classify_jobs(worker)[1].labels == labels


async def test_classify_message_menu_uses_the_default_set(harness, worker):
    await harness.start_bot()
    fake = harness.fake
    admin = fake.user("admin", PERM_VIEW_SEND | PERM_MANAGE_GUILD)
    ann, bob = fake.user("ann"), fake.user("bob")
    posted = fake.post_user_message(bob, "what is it?", [fake.upload(png_bytes(), "x.png", "image/png", 64, 64)])
    assert "no label set yet" in await refusal(harness, await fake.message_command("Classify", ann, posted))
    await assert_nothing_queued(harness)
    await answer(harness, await fake.slash("labels save", admin, name="first", labels="red, green"))
    await answer(harness, await fake.slash("labels save", admin, name="second", labels="circle, square, star"))
    inter = await fake.message_command("Classify", ann, posted)
    final = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                 where=lambda c: "```" in (c.json or {}).get("content", ""))
    assert classify_jobs(worker)[0].labels == ["red", "green"]  # the first saved set
    assert "**red**" in final.json["content"]
    text_only = fake.post_user_message(bob, "no picture", [])
    assert "no picture to classify" in await refusal(harness, await fake.message_command("Classify", ann, text_only))
