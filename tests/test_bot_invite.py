"""`python -m bot invite`: the OAuth2 link asks for exactly what the features need."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import discord
import pytest

from bot.permissions import CHANNEL_NEEDS, FEATURES, NoApplicationId, application_id_from_token, invite_permissions

APP_ID = 1234567890123456789
TOKEN = base64.b64encode(str(APP_ID).encode()).decode().rstrip("=") + ".GxYzAb.signaturepart"


def invite(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "CLIPBOT_APPLICATION_ID",
                                                             "DISCORD_APPLICATION_ID")}
    return subprocess.run([sys.executable, "-m", "bot", "invite", *args], env={**full, **env},
                          capture_output=True, text=True, timeout=60)


def test_invite_url_scopes_and_permissions():
    proc = invite("--json", DISCORD_TOKEN=TOKEN)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    query = parse_qs(urlsplit(out["url"]).query)
    assert query["client_id"] == [str(APP_ID)]
    assert query["scope"][0].split() == ["bot", "applications.commands"]
    value = int(query["permissions"][0])
    union = 0
    for f in FEATURES:
        for name in f.permissions:
            union |= getattr(discord.Permissions, name).flag
    assert value == union == invite_permissions().value == out["permissions"]
    perms = discord.Permissions(value)
    for name in ("view_channel", "send_messages", "embed_links", "attach_files", "add_reactions",
                 "read_message_history", "create_public_threads", "send_messages_in_threads"):
        assert getattr(perms, name), name
    for needs in CHANNEL_NEEDS.values():  # the doctor never asks a channel for more than the invite grants
        assert all(getattr(perms, n) for n in needs)
    assert not perms.administrator and not perms.manage_guild and not perms.mention_everyone


def test_manage_messages_is_not_asked_because_nothing_needs_it():
    """Manage Messages would only be needed to remove members' reactions or delete their messages."""
    assert not invite_permissions().manage_messages
    bot_dir = Path(__file__).resolve().parent.parent / "bot"
    needs_manage = re.compile(r"\.(remove_reaction|clear_reactions?|purge|pin|unpin|delete_messages)\(")
    users = [str(p) for p in bot_dir.rglob("*.py") if needs_manage.search(p.read_text())]
    assert users == [], f"these call APIs that need Manage Messages: add it to FEATURES with the reason: {users}"


def test_application_id_setting_wins_and_readable_output():
    proc = invite(DISCORD_TOKEN=TOKEN, DISCORD_APPLICATION_ID="42")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("https://discord.com/oauth2/authorize?client_id=42&")
    assert "Add Reactions" in proc.stderr and "Read Message History" in proc.stderr


def test_no_token_and_no_id_is_a_clear_error():
    proc = invite()
    assert proc.returncode == 2 and proc.stdout == ""
    assert "CLIPBOT_APPLICATION_ID" in proc.stderr


def test_application_id_from_token():
    assert application_id_from_token(TOKEN) == APP_ID
    with pytest.raises(NoApplicationId):
        application_id_from_token("not-a-token")
