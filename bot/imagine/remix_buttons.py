"""The buttons and the select menu a finished generation carries besides Re-roll.

Refine (`clipbot:refine:<job>[:<k>]`) continues picture k; Similar (`clipbot:similar:<job>[:<k>]`)
searches the gallery for pictures like it; the frame menu (`clipbot:frame:<job>`, values
`<k>:<step>`) lets the author swap picture k for an earlier frame. `:<k>` is left out when the
generation made one picture. Like the other buttons they are `DynamicItem`s, so they keep working
after a restart; the work is done by the cogs named here (this module cannot import cogs).
"""
from __future__ import annotations

from typing import cast

import discord

from bot.app import ClipBot

REMIX_COG = "Remix"  # refine and pick a frame
SIMILAR_COG = "Similar"
JOB = r"(?P<job>[0-9a-zA-Z_-]{1,64})"
INDEX = r"(?::(?P<k>[1-9]))?"


def suffix(k: int, count: int) -> str:
    return f":{k}" if count > 1 else ""


class RefineButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"clipbot:refine:{JOB}{INDEX}"):
    def __init__(self, job_id: str, k: int = 1, count: int = 1):
        label = f"Refine {k}" if count > 1 else "Refine"
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, emoji="🔁",
                                           custom_id=f"clipbot:refine:{job_id}{suffix(k, count)}",
                                           row=1))
        self.job_id, self.k = job_id, k

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        k = int(match["k"] or 1)
        return cls(match["job"], k, 2 if match["k"] else 1)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast(ClipBot, interaction.client)
        await bot.get_cog(REMIX_COG).refine(interaction, self.job_id, self.k)


class SimilarButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"clipbot:similar:{JOB}{INDEX}"):
    def __init__(self, job_id: str, k: int = 1, count: int = 1):
        label = f"Similar {k}" if count > 1 else "Similar"
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, emoji="🔎",
                                           custom_id=f"clipbot:similar:{job_id}{suffix(k, count)}",
                                           row=2 if count > 1 else 1))
        self.job_id, self.k = job_id, k

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        k = int(match["k"] or 1)
        return cls(match["job"], k, 2 if match["k"] else 1)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast(ClipBot, interaction.client)
        await bot.get_cog(SIMILAR_COG).similar_to_generation(interaction, self.job_id, self.k)


MAX_OPTIONS = 25  # Discord's limit for one select menu


def frame_options(pictures: list[dict]) -> list[discord.SelectOption]:
    """One option per kept frame (`<k>:<step>`), the latest of each picture first kept when they
    do not all fit; the final picture itself is not offered (it is already shown)."""
    per_picture = max(1, MAX_OPTIONS // max(1, len(pictures)))
    options = []
    for p in pictures:
        earlier = [f for f in p["frames"] if f["key"] != p["png"]][-per_picture:]
        for f in earlier:
            label = f"Picture {p['index']} · step {f['step']}" if len(pictures) > 1 else f"Step {f['step']}"
            options.append(discord.SelectOption(label=label, value=f"{p['index']}:{f['step']}"))
    return options[:MAX_OPTIONS]


class FrameSelect(discord.ui.DynamicItem[discord.ui.Select], template=rf"clipbot:frame:{JOB}"):
    def __init__(self, job_id: str, options: list[discord.SelectOption] | None = None):
        # a restored menu gets its options from the clicked message; only `values` matter then
        super().__init__(discord.ui.Select(custom_id=f"clipbot:frame:{job_id}", placeholder="Pick an earlier frame…",
                                           options=options or [discord.SelectOption(label="final", value="0:0")],
                                           row=3))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast(ClipBot, interaction.client)
        await bot.get_cog(REMIX_COG).pick_frame(interaction, self.job_id, self.item.values)


DYNAMIC_ITEMS = (RefineButton, SimilarButton, FrameSelect)
