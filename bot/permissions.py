"""What the bot may do in a server, feature by feature, and the invite link built from it.

The invite asks for exactly the union of `FEATURES`; the doctor checks each configured channel
against the part that channel needs (`CHANNEL_NEEDS`). Manage Messages is deliberately absent:
the bot only edits and deletes its own messages and only adds its own reactions (which need no
extra permission); a member's vote is counted once however often it is repeated (bot/votes.py),
so no reaction of a member is ever removed. Cancelling someone else's job checks the *member's*
Manage Messages, not the bot's.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import discord

SCOPES = ("bot", "applications.commands")


@dataclass(frozen=True)
class Feature:
    name: str
    permissions: tuple[str, ...]  # discord.Permissions flag names
    why: str


FEATURES: tuple[Feature, ...] = (
    Feature("imagine", ("view_channel", "send_messages", "attach_files", "embed_links"),
            "posts the progress message in the channel (bot token: it outlives the 15-minute interaction "
            "token) and edits in the preview, the PNG and the GIF"),
    Feature("votes", ("add_reactions", "read_message_history"),
            "adds the vote reactions under each finished picture (Discord wants Read Message History "
            "to react to a message)"),
    Feature("hall of fame", ("view_channel", "send_messages", "embed_links"),
            "reposts a well-voted picture as an embed in the hall-of-fame channel"),
    Feature("classify, find, gallery", ("view_channel", "send_messages", "embed_links"),
            "answers through the interaction; a result that arrives after its token expired (~15 min) "
            "is posted in the channel as embeds"),
    Feature("contests", ("create_public_threads", "send_messages_in_threads"),
            "a contest runs in a public thread of its own"),
)

# What one channel needs, by the role it plays in a server's /config.
CHANNEL_NEEDS: dict[str, tuple[str, ...]] = {
    "commands": ("view_channel", "send_messages", "embed_links", "attach_files", "add_reactions",
                 "read_message_history"),
    "hall of fame": ("view_channel", "send_messages", "embed_links"),
}


def permissions_of(names) -> discord.Permissions:
    return discord.Permissions(**{n: True for n in names})


def invite_permissions() -> discord.Permissions:
    """The OR of every feature's permissions: what the invite link asks for."""
    perms = discord.Permissions.none()
    for f in FEATURES:
        perms |= permissions_of(f.permissions)
    return perms


def missing(have: discord.Permissions, names) -> list[str]:
    """The names in `names` that `have` lacks, as Discord's UI spells them ("Attach Files")."""
    return [pretty(n) for n in names if not getattr(have, n)]


def pretty(name: str) -> str:
    return name.replace("_", " ").title()


class NoApplicationId(ValueError):
    pass


def application_id_from_token(token: str) -> int:
    """A bot token's first segment is the base64 of the application's (= bot user's) id."""
    head = token.strip().split(".", 1)[0]
    try:
        text = base64.b64decode(head + "=" * (-len(head) % 4), validate=False).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.isdigit():
        raise NoApplicationId("DISCORD_TOKEN does not start with a base64 application id; "
                              "set CLIPBOT_APPLICATION_ID (the Application ID on the developer portal)")
    return int(text)


def application_id(settings) -> int:
    if settings.application_id:
        return settings.application_id
    if not (settings.discord_token or "").strip():
        raise NoApplicationId("set CLIPBOT_APPLICATION_ID (the Application ID on the developer portal) "
                              "or DISCORD_TOKEN")
    return application_id_from_token(settings.discord_token)


def invite_url(app_id: int, guild_id: int | None = None) -> str:
    guild = discord.Object(guild_id) if guild_id else discord.utils.MISSING
    return discord.utils.oauth_url(app_id, permissions=invite_permissions(), guild=guild, scopes=SCOPES)
