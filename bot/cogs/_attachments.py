"""Attachment intake shared by /classify, /imagine and "Add to gallery": check, download, check again."""
from __future__ import annotations

import asyncio

import discord

from bot.limits import AttachmentMeta, Refused, check_attachment_meta, check_image_bytes
from bot.text import code_text
from jobs.settings import Settings


def meta(att: discord.Attachment) -> AttachmentMeta:
    return AttachmentMeta(att.filename, att.size, att.content_type, att.width, att.height)


def precheck(att: discord.Attachment, settings: Settings) -> None:
    """What Discord reports (type, size, dimensions): raises Refused before any download."""
    problem = check_attachment_meta(meta(att), settings)
    if problem:
        raise Refused(problem)


async def fetch_image(att: discord.Attachment, settings: Settings) -> bytes:
    """Download and verify the bytes really are an acceptable image. Raises Refused."""
    try:
        data = await att.read()
    except discord.HTTPException as e:
        raise Refused(f"I could not download `{code_text(att.filename, 100)}` ({e.status}); try uploading it again.") from None
    problem = await asyncio.to_thread(check_image_bytes, att.filename, data, settings)
    if problem:
        raise Refused(problem)
    return data
