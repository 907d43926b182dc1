"""The bot starts against the fake Discord, registers its commands, and answers a bad command privately."""
from tests.bot_harness import harness, png_bytes  # noqa: F401
from tests.fake_discord import EPHEMERAL


async def test_bot_registers_commands_with_contract_option_names(harness):
    await harness.start_bot()
    cmds = harness.fake.commands
    opts = {name: [o["name"] for o in c.get("options", [])] for name, c in cmds.items()}
    assert opts["classify"] == ["image", "labels", "labelset"]
    assert opts["find"] == ["query", "image", "top"]
    assert opts["imagine"] == ["prompt", "size", "steps", "seed", "init_image", "count"]
    assert opts["labels"] == ["save", "list", "delete"]
    assert [o["name"] for o in cmds["labels"]["options"][0]["options"]] == ["name", "labels", "file", "default"]
    assert opts["history"] == []
    assert "queue" in cmds and "top" in cmds and "config" in cmds
    assert opts["cancel"] == ["job"]
    assert opts["top"] == ["period"]
    assert cmds["Add to gallery"]["type"] == 3
    assert cmds["Find similar"]["type"] == 3 and cmds["Classify"]["type"] == 3
    assert harness.fake.identifies[0]["intents"] & (1 << 10)  # guild message reactions


async def test_refusal_bad_labels_is_ephemeral(harness):
    await harness.start_bot()
    fake = harness.fake
    user = fake.user("ann")
    att = fake.upload(png_bytes(), "shape.png", "image/png", 64, 64)
    inter = await fake.slash("classify", user, image=att, labels="only one")
    call = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert call.json["type"] == 4 and call.json["data"]["flags"] & EPHEMERAL
    assert "at least 2" in call.json["data"]["content"]
    assert call.at - inter.sent_at < 3.0
