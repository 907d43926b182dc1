"""A generation's lineage as one line of text, for /top, the hall of fame and /history:
where it came from (the parent it refines or re-rolls, linked) and what came from it."""
from __future__ import annotations

from bot.app import ClipBot


async def message_link(bot: ClipBot, job_id: str) -> str | None:
    record = await bot.records.get(job_id)
    if record is None or not (record.guild and record.channel and record.message_id):
        return None
    return f"https://discord.com/channels/{record.guild}/{record.channel}/{record.message_id}"


async def lineage_line(bot: ClipBot, job_id: str) -> str:
    """'refines [parent](link) · 2 remixes: [1](link) [2](link)', or '' for a generation without lineage."""
    bits = []
    parent = await bot.generations.parent(job_id)
    if parent is not None:
        link = await message_link(bot, parent.parent)
        what = "refines" if parent.how == "refine" else "re-roll of"
        target = f"picture {parent.index} of the parent" if parent.index else "the parent"
        bits.append(f"{what} [{target}]({link})" if link else f"{what} {target}")
    children = await bot.generations.children(job_id)
    if children:
        links = []
        for n, child in enumerate(children[:5], 1):
            link = await message_link(bot, child)
            links.append(f"[{n}]({link})" if link else str(n))
        more = " …" if len(children) > 5 else ""
        bits.append(f"{len(children)} remix{'es' if len(children) > 1 else ''}: {' '.join(links)}{more}")
    return " · ".join(bits)
