"""A finished generation's files and components.

One picture: `imagine.png` and `timelapse.gif`. Several (`count` > 1): the grid first (so the
leaderboard and the hall of fame show all of them), then every picture as its own PNG, then the
first picture's timelapse. Components: Re-roll; Refine and Similar per picture; a menu of the
earlier frames the worker kept (Pick a frame).
"""
from __future__ import annotations

import io

import discord

from bot.imagine.buttons import RerollButton
from bot.imagine.remix_buttons import FrameSelect, RefineButton, SimilarButton, frame_options
from jobs.remix import pictures
from jobs.schemas import Result


def picture_filename(k: int, count: int) -> str:
    return "imagine.png" if count <= 1 else f"picture_{k}.png"


def result_blobs(event: Result) -> list[tuple[str, str]]:
    """(blob key, filename) of everything the final post carries, in order."""
    found = pictures(event)
    count = len(found)
    out: list[tuple[str, str]] = []
    if count > 1 and event.data.get("grid") in event.blobs:
        out.append((event.blobs[event.data["grid"]], "grid.png"))
    out += [(p["png"], picture_filename(p["index"], count)) for p in found]
    if "gif" in event.blobs:
        out.append((event.blobs["gif"], "timelapse.gif"))
    return out


async def result_files(queue, event: Result, spoiler: bool = False) -> list[discord.File]:
    """The post's files; `spoiler`: every one hidden behind a spoiler (a flagged generation)."""
    files = []
    for key, filename in result_blobs(event):
        payload = await queue.get_blob(key)
        if payload:
            files.append(discord.File(io.BytesIO(payload), filename=filename, spoiler=spoiler))
    return files


def result_view(job_id: str, event: Result) -> discord.ui.View:
    found = pictures(event)
    count = len(found)
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id))
    for p in found:
        view.add_item(RefineButton(job_id, p["index"], count))
    for p in found:
        view.add_item(SimilarButton(job_id, p["index"], count))
    options = frame_options(found)
    if options:
        view.add_item(FrameSelect(job_id, options))
    return view
