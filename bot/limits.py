"""Checks that run before anything is queued. Each returns the refusal text, or None when fine.

Pure functions over plain values (plus two small Redis helpers for the cooldown), so they are
tested without Discord. The texts are shown to the member as they are: say what and what to do.
Member text quoted in them (file names, sizes, words, the validators' echoes) is escaped here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from bot.guild_config import GuildConfig
from bot.text import code_text, member_text
from jobs.keys import Keys
from jobs.schemas import MAX_PROMPT_CHARS, MAX_QUERY_CHARS
from jobs.settings import Settings
from jobs.validation import JobError
from jobs.validation.images import SUPPORTED_NAMES, decode_image, describe_content, sniff_image_type
from jobs.validation.labels import validate_labels
from jobs.validation.prompts import parse_prompts

_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")


class Refused(Exception):
    """A request we will not queue; str(e) is the ephemeral answer."""


@dataclass(frozen=True)
class AttachmentMeta:
    """What Discord tells us about an attachment before we download it."""

    filename: str
    size: int
    content_type: str | None
    width: int | None
    height: int | None


def _mb(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_channel(cfg: GuildConfig, channel_id: int | None) -> str | None:
    if cfg.allowed_channels and channel_id not in cfg.allowed_channels:
        where = ", ".join(f"<#{c}>" for c in cfg.allowed_channels)
        return f"I don't take commands in this channel. Use {where}."
    return None


def find_banned(cfg: GuildConfig, *texts: str) -> str | None:
    """Whole-word, case-insensitive match against the server's banned words."""
    for word in cfg.banned_words:
        pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
        if any(pattern.search(t or "") for t in texts):
            return f"Your request contains a word this server does not allow ('{member_text(word, 60)}'). Rephrase it and try again."
    return None


def check_attachment_meta(att: AttachmentMeta, settings: Settings) -> str | None:
    """Type, size and dimensions as Discord reports them: refuse before downloading anything."""
    ctype = (att.content_type or "").split(";")[0].strip().lower()
    looks_image = ctype.startswith("image/") or (not ctype and att.filename.lower().endswith(_IMAGE_EXT))
    if not looks_image:
        what = member_text(ctype, 100) or "a file of unknown type"
        return f"`{code_text(att.filename, 100)}` is {what}, not an image. Attach a {SUPPORTED_NAMES} image."
    if att.size > settings.max_attachment_bytes:
        return (f"`{code_text(att.filename, 100)}` is {_mb(att.size)}; the limit is {_mb(settings.max_attachment_bytes)}. "
                "Send a smaller image.")
    if att.width is not None and att.height is not None:
        return _check_dims(att.filename, att.width, att.height, settings)
    return None


def _check_dims(name: str, width: int, height: int, settings: Settings) -> str | None:
    name = code_text(name, 100)
    if min(width, height) < settings.min_image_side:
        side = settings.min_image_side
        return f"`{name}` is only {width}x{height} pixels; send an image at least {side}x{side}."
    if max(width, height) > settings.max_image_side:
        return (f"`{name}` is {width}x{height} pixels; the largest side may be {settings.max_image_side}. "
                "Send a smaller image.")
    return None


def check_image_bytes(name: str, data: bytes, settings: Settings) -> str | None:
    """The downloaded bytes: really an image we decode, within size and dimensions. CPU: run in a thread."""
    shown = code_text(name, 100)
    if len(data) > settings.max_attachment_bytes:
        return (f"`{shown}` is {_mb(len(data))}; the limit is {_mb(settings.max_attachment_bytes)}. "
                "Send a smaller image.")
    if sniff_image_type(data) is None:
        return f"`{shown}` is not a supported image: it looks like {describe_content(data)}. Send a {SUPPORTED_NAMES} image."
    try:
        img = decode_image(data, max_bytes=settings.max_attachment_bytes, max_pixels=settings.max_image_side ** 2)
    except JobError as e:
        return f"`{shown}`: {member_text(str(e))}"
    return _check_dims(name, img.width, img.height, settings)


def parse_labels(raw: str) -> list[str]:
    """'red circle, blue square' -> labels (the worker's own validation, run before queueing). Raises Refused."""
    try:
        return validate_labels(raw)
    except JobError as e:
        raise Refused(member_text(str(e))) from None


def check_prompt(raw: str) -> str | None:
    if len(raw) > MAX_PROMPT_CHARS:
        return f"The prompt is {len(raw)} characters long; the limit is {MAX_PROMPT_CHARS}."
    try:
        parse_prompts(raw)
    except JobError as e:
        return member_text(str(e))
    return None


def check_query(raw: str) -> str | None:
    if not raw.strip():
        return "The search text is empty: describe what you are looking for."
    if len(raw) > MAX_QUERY_CHARS:
        return f"The search text is {len(raw)} characters long; the limit is {MAX_QUERY_CHARS}."
    return None


def parse_size(raw: str | None) -> tuple[int, int]:
    """'256x256' or '256' -> (width, height); None -> (0, 0) = worker default. Raises Refused."""
    if not raw:
        return 0, 0
    match = re.fullmatch(r"\s*(\d{1,4})\s*(?:[x×X*]\s*(\d{1,4}))?\s*", raw)
    if not match:
        raise Refused(f"Size `{code_text(raw, 40)}` is not WIDTHxHEIGHT, e.g. `256x256`.")
    width = int(match.group(1))
    height = int(match.group(2) or width)
    if not (16 <= width <= 1024 and 16 <= height <= 1024):
        raise Refused(f"Size {width}x{height} is out of range: each side must be between 16 and 1024.")
    return width, height


class Cooldowns:
    """Least time between two accepted jobs of one member in one server (Redis keys with a TTL).

    The queue's submit script takes the cooldown in the same step as the per-user limit (the
    authority: concurrent commands of one member queue one job); `left` is the cheap early answer
    before anything is downloaded, on the same key."""

    def __init__(self, redis, prefix: str):
        self.redis, self.keys = redis, Keys(prefix)

    def _key(self, guild: int | None, user: int) -> str:
        return self.keys.cooldown(guild, user)

    async def left(self, guild: int | None, user: int) -> float:
        left_ms = await self.redis.pttl(self._key(guild, user))
        return max(left_ms, 0) / 1000.0
