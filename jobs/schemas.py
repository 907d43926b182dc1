"""Job and event schemas: the wire contract between bot, worker and CLI.

Everything on Redis is JSON validated by these models on both sides (never pickle).
Images never travel inside a job or event: they are stored as blobs (see
`jobs.client`) and referenced by key, so stream entries stay small.
"""
from __future__ import annotations

import math
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic_core import PydanticCustomError

# Bounds that both the bot (before queueing) and the worker (before running) enforce.
MAX_LABELS = 25  # what one Discord command option can carry
MAX_JOB_LABELS = 1000  # a ClassifyJob (CLI --labels-file, ImageNet-sized label sets)
MIN_LABELS = 2
MAX_LABEL_CHARS = 100
MAX_PROMPT_CHARS = 300
MAX_QUERY_CHARS = 300
MAX_TOP = 10
MAX_WEIGHT = 100.0  # |weight| of a prompt or image prompt: Adam is scale-free, larger values only risk overflow
MAX_COUNT = 4  # pictures (seeds) one imagine job may ask for


def new_id() -> str:
    return uuid.uuid4().hex


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Origin(_Model):
    """Where a job came from, so results can be routed back. Opaque to the worker."""

    source: Literal["discord", "cli", "bench", "test"] = "cli"
    interaction_token: str | None = None  # valid 15 minutes only; long jobs use message_id
    message_id: int | None = None  # the channel message the bot edits with progress
    reroll_of: str | None = None  # job id this one re-rolls


class _JobBase(_Model):
    id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    user: int = 0  # Discord user id; 0 for local CLI
    guild: int | None = None
    channel: int | None = None
    created: float = Field(default_factory=time.time)
    origin: Origin = Field(default_factory=Origin)


# ----------------------------------------------------------------------------- safety check

MAX_SAFETY_LABELS = 25

# A short starting list for real CLIP checkpoints (ViT-B/32 and up); servers replace it with
# /config safety_labels. The shipped shapes CLIP knows only colours and shapes, so with it these
# words mean nothing: its tests mark "a red star" unsafe instead.
DEFAULT_SAFETY_LABELS: tuple[str, ...] = (
    "explicit nudity", "sexual content", "graphic violence", "gore", "blood", "a gun pointed at the viewer",
    "self-harm", "a hate symbol",
)


class SafetyPolicy(_Model):
    """What a server counts as unsafe: an image is flagged when the probability of its likeliest
    safety label, scored zero-shot against these plus neutral labels, reaches `threshold`."""

    labels: list[Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]] = Field(
        min_length=1, max_length=MAX_SAFETY_LABELS)
    threshold: float = Field(0.5, gt=0.0, le=1.0)


class SafetyVerdict(_Model):
    """The outcome of one safety check; results carry it as `data["safety"]` (see `safety_of`)."""

    flagged: bool
    top_label: str  # the likeliest safety label
    top_score: float = Field(ge=0.0, le=1.0)
    threshold: float
    scores: dict[str, float]  # every label scored, safety and neutral


def safety_of(data: dict[str, Any]) -> SafetyVerdict | None:
    """The verdict in a Result's data, or None when the image was not checked."""
    raw = data.get("safety")
    return None if raw is None else SafetyVerdict.model_validate(raw)


class ClassifyJob(_JobBase):
    kind: Literal["classify"] = "classify"
    image: str  # blob key
    labels: list[Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]] = Field(
        min_length=MIN_LABELS, max_length=MAX_JOB_LABELS
    )
    safety: SafetyPolicy | None = None  # check the uploaded image first; flagged: the job fails privately


class GalleryItem(_Model):
    """One image of a server gallery: what /find returns."""

    item_id: str = Field(min_length=1, max_length=128)  # e.g. "<message id>:<attachment index>"
    image: str | None = None  # blob key of the pixels to embed (IndexJob only)
    message_link: str | None = None
    author: int | None = None
    caption: str | None = Field(default=None, max_length=2000)
    thumbnail_url: str | None = None


class IndexJob(_JobBase):
    kind: Literal["index"] = "index"
    add: list[GalleryItem] = Field(default_factory=list, max_length=100)
    delete: list[str] = Field(default_factory=list, max_length=1000)  # item ids
    safety: SafetyPolicy | None = None  # flagged images are rejected, never indexed


class FindJob(_JobBase):
    """A text query, an image (any blob: an upload, a gallery item's or a generation's picture), or
    both: then the two unit embeddings are added and renormalised (equal weights)."""

    kind: Literal["find"] = "find"
    query: str | None = Field(default=None, min_length=1, max_length=MAX_QUERY_CHARS)
    image: str | None = None  # blob key: search by image instead of (or as well as) text
    top: int = Field(default=5, ge=1, le=MAX_TOP)
    # An item of this guild's gallery: its stored embedding is the image (no blob needed, so it works
    # after the upload's blob expired), and the item itself is left out of the hits.
    item: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _text_or_image(self) -> FindJob:
        if self.query is None and self.image is None and self.item is None:
            raise ValueError("give a text to search for, an image to find similar ones, or both")
        return self


class ImagePrompt(_Model):
    image: str  # blob key
    weight: float = 1.0  # in [-MAX_WEIGHT, MAX_WEIGHT]; negative pushes the picture away from the image

    @field_validator("weight")
    @classmethod
    def _weight_in_range(cls, v: float) -> float:
        if not (math.isfinite(v) and abs(v) <= MAX_WEIGHT):
            raise PydanticCustomError(
                "weight_range", "an image prompt's weight must be a number between -{bound} and {bound}, not {value}",
                {"bound": f"{MAX_WEIGHT:g}", "value": f"{v:g}"})
        return v


class ImagineJob(_JobBase):
    kind: Literal["imagine"] = "imagine"
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)  # "a | b:0.5 | c:-1"
    width: int = Field(default=0, ge=0, le=4096)  # 0 = worker default; worker rounds and bounds
    height: int = Field(default=0, ge=0, le=4096)
    steps: int = Field(default=0, ge=0, le=10_000)  # 0 = worker default; worker bounds
    seed: int | None = Field(default=None, ge=0, lt=2**63)  # None = worker picks, always reported
    init_image: str | None = None  # blob key
    init_weight: float = Field(default=0.0, ge=0.0, le=100.0)
    image_prompts: list[ImagePrompt] = Field(default_factory=list, max_length=4)
    safety: SafetyPolicy | None = None  # the init image is refused if flagged; the result is marked
    # Variations: `count` pictures of one prompt, seeds seed, seed+1, ... (mod 2**63), run as one batch.
    count: int = Field(default=1, ge=1, le=MAX_COUNT)
    # Lineage of a refine (init_image = a picture of an earlier result): the job it came from and,
    # when that job made several pictures, which one (1-based, as `pictures[].index` in its Result).
    parent: str | None = Field(default=None, min_length=1, max_length=64)
    parent_index: int | None = Field(default=None, ge=1, le=MAX_COUNT)


Job = Annotated[ClassifyJob | IndexJob | FindJob | ImagineJob, Field(discriminator="kind")]
JOB_ADAPTER: TypeAdapter[Job] = TypeAdapter(Job)


def parse_job(raw: str | bytes) -> Job:
    """Validate a job from its JSON text. Raises pydantic.ValidationError."""
    return JOB_ADAPTER.validate_json(raw)


# ----------------------------------------------------------------------------- events


class _EventBase(_Model):
    job_id: str
    seq: int = Field(ge=0)  # per job, strictly increasing; (job_id, seq) is applied once
    at: float = Field(default_factory=time.time)


class Queued(_EventBase):
    type: Literal["queued"] = "queued"
    position: int = 0  # jobs ahead of this one


class Started(_EventBase):
    type: Literal["started"] = "started"
    worker: str
    attempt: int = 1


class Progress(_EventBase):
    type: Literal["progress"] = "progress"
    step: int
    total: int
    loss: float | None = None
    preview: str | None = None  # blob key of a small PNG


class Result(_EventBase):
    type: Literal["result"] = "result"
    data: dict[str, Any]  # kind-specific JSON (labels+scores, hits, seed/steps/clip_score...)
    blobs: dict[str, str] = Field(default_factory=dict)  # name -> blob key ("png", "gif", ...)


class Failed(_EventBase):
    type: Literal["failed"] = "failed"
    reason: str  # shown to the user: clear and actionable
    dead_lettered: bool = False


class Cancelled(_EventBase):
    type: Literal["cancelled"] = "cancelled"
    by: int | None = None


Event = Annotated[Queued | Started | Progress | Result | Failed | Cancelled, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
FINAL_EVENTS = (Result, Failed, Cancelled)


def parse_event(raw: str | bytes) -> Event:
    return EVENT_ADAPTER.validate_json(raw)
