"""The CLIP engine's job handlers (classify, index, find), following worker/api.py.

`build(settings, device)` is what `worker.handlers` calls when a worker starts: it loads the CLIP
once and returns {kind: handler}. The gallery's Redis connection is opened on the first index or
find job, so a local `classify` never needs a Redis.
"""
from __future__ import annotations

import atexit
import logging
from collections.abc import Callable, Sequence

import redis

from jobs.schemas import ClassifyJob, FindJob, IndexJob
from jobs.validation.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode_image
from worker.api import JobCancelled, JobContext, JobError, Outcome
from worker.clip.classify import DEFAULT_TEMPLATES, LabelCache, classify, validate_templates
from worker.clip.gallery import MAX_ITEMS, Gallery, NewItem
from worker.clip.model import Clip, get_clip
from worker.clip.query import query_vector
from worker.clip.safety import refuse_if_flagged

log = logging.getLogger(__name__)

LOCAL_GALLERY = 0  # jobs without a guild (local CLI, DMs) share this gallery id
EMBED_BATCH = 16


class ClipHandlers:
    """Handlers bound to one loaded CLIP and (lazily) one Redis for galleries.

    `redis_client` is a sync redis.Redis (decode_responses=False), or a zero-argument function
    returning one, called on first use.
    """

    def __init__(self, clip: Clip, redis_client: redis.Redis | Callable[[], redis.Redis] | None = None, *,
                 prefix: str = "clipbot:", templates: Sequence[str] = DEFAULT_TEMPLATES,
                 max_image_bytes: int = DEFAULT_MAX_BYTES, max_image_pixels: int = DEFAULT_MAX_PIXELS,
                 gallery_max_items: int = MAX_ITEMS):
        self.clip = clip
        self.templates = validate_templates(templates)
        self.labels = LabelCache(clip, self.templates)  # a repeated label set is embedded once per worker
        self.max_image_bytes, self.max_image_pixels = max_image_bytes, max_image_pixels
        self._redis = redis_client
        self._gallery_args = dict(prefix=prefix, max_items=gallery_max_items)
        self._gallery: Gallery | None = None

    @property
    def gallery(self) -> Gallery:
        if self._gallery is None:
            if self._redis is None:
                raise JobError("This worker has no Redis configured, so it cannot serve server galleries.")
            client = self._redis() if callable(self._redis) and not isinstance(self._redis, redis.Redis) else self._redis
            self._gallery = Gallery(client, model_tag=self.clip.fingerprint, dim=self.clip.dim, **self._gallery_args)
        return self._gallery

    def as_dict(self) -> dict[str, Callable]:
        return {"classify": self.classify, "index": self.index, "find": self.find}

    def _image(self, ctx: JobContext, key: str):
        return decode_image(ctx.blob(key), max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels,
                            min_side=2 * self.clip.image_size)  # CLIP sees image_size px: decode no more than needed

    # ------------------------------------------------------------------ classify

    def classify(self, job: ClassifyJob, ctx: JobContext) -> Outcome:
        image = self._image(ctx, job.image)
        verdict = refuse_if_flagged(self.clip, image, job.safety, what=f"classify {job.id}", templates=self.templates)
        ranked = classify(self.clip, image, job.labels, self.templates, cache=self.labels)
        data = {"labels": [{"label": label, "score": score} for label, score in ranked]}
        if verdict is not None:
            data["safety"] = verdict.model_dump()
        return Outcome(data)

    # ------------------------------------------------------------------ index

    def index(self, job: IndexJob, ctx: JobContext) -> Outcome:
        """Delete, then add. An add whose item_id is already in the gallery (and not deleted by this
        job) is left as it is: ids name immutable attachments, so re-indexing a channel or a folder
        embeds nothing twice. To replace an item, delete and add it in the same job.

        One bad image does not fail a batch: it is reported in `rejected` with its reason. A job
        that adds a single image (and deletes nothing) fails with that reason instead.
        """
        guild = LOCAL_GALLERY if job.guild is None else job.guild
        deleting = set(job.delete)
        candidates = [it for it in job.add if it.item_id not in deleting]
        present = self.gallery.existing(guild, [it.item_id for it in candidates]) if candidates else set()
        todo, unchanged, rejected, seen = [], 0, [], set()
        for it in job.add:
            if it.item_id in present or it.item_id in seen:
                unchanged += 1
            elif it.image is None:
                rejected.append({"item_id": it.item_id, "reason": "no image was attached to index"})
            else:
                todo.append(it)
            seen.add(it.item_id)
        new_items: list[NewItem] = []
        for start in range(0, len(todo), EMBED_BATCH):
            if ctx.cancelled():
                raise JobCancelled(job.id)
            batch, images = [], []
            for it in todo[start: start + EMBED_BATCH]:
                try:
                    image = self._image(ctx, it.image)
                    refuse_if_flagged(self.clip, image, job.safety, what=f"gallery item {it.item_id}",
                                      templates=self.templates)
                    images.append(image)
                    batch.append(it)
                except JobError as e:  # ImageRejected, an expired blob, or the safety check
                    rejected.append({"item_id": it.item_id, "reason": str(e)})
            if images:
                vectors = self.clip.embed_images(images).numpy()
                new_items += [
                    NewItem(it.item_id, v, message_link=it.message_link, author=it.author, caption=it.caption,
                            thumbnail_url=it.thumbnail_url)
                    for it, v in zip(batch, vectors)
                ]
            ctx.progress(min(start + EMBED_BATCH, len(todo)), len(todo))
        added, deleted = self.gallery.update(guild, add=new_items, delete=list(job.delete))
        if len(job.add) == 1 and rejected and not job.delete:
            raise JobError(rejected[0]["reason"])  # a member adding one image: tell them why it failed
        return Outcome({"added": added, "deleted": deleted, "unchanged": unchanged, "rejected": rejected,
                        "total": self.gallery.count(guild)})

    # ------------------------------------------------------------------ find

    def find(self, job: FindJob, ctx: JobContext) -> Outcome:
        """Top K gallery items for a text query, an image (a blob or a gallery item), or both (see `query_vector`)."""
        guild = LOCAL_GALLERY if job.guild is None else job.guild
        image = None
        if job.image is not None:
            try:
                image = self._image(ctx, job.image)
            except JobError as e:
                raise JobError(f"The image to search with cannot be used: {e}") from None
        stored = None
        if job.item is not None:
            stored = self.gallery.embedding(guild, job.item)
            if stored is None:
                raise JobError("That image is no longer in this server's gallery, so there is nothing to compare with.")
        q = query_vector(self.clip, job.query, image, stored)
        hits = self.gallery.search(guild, q, top=job.top + (job.item is not None))
        hits = [h for h in hits if h.item_id != job.item][: job.top]  # an item is not "similar" to itself
        return Outcome({"hits": [h.as_dict() for h in hits], "total": self.gallery.count(guild)})


def _redis_factory(settings) -> Callable[[], redis.Redis]:
    def connect() -> redis.Redis:
        url = settings.redis_url
        if not url:  # the queue worker started (or joined) the embedded Redis under DATA_DIR: join it
            from jobs.embedded import resolve_redis_url

            url, owned = resolve_redis_url(settings)
            if owned is not None:
                atexit.register(owned.stop)
        return redis.Redis.from_url(url)

    return connect


def build(settings, device: str | None = None) -> dict[str, Callable]:
    """{kind: handler} for a worker: loads settings.clip_model once (shared with the imagine engine)."""
    clip = get_clip(settings.clip_model, device)
    templates = getattr(settings, "clip_templates", None)
    if isinstance(templates, str):
        templates = [t.strip() for t in templates.split("|") if t.strip()]
    handlers = ClipHandlers(
        clip, _redis_factory(settings),
        prefix=getattr(settings, "redis_prefix", "clipbot:"),
        templates=templates or DEFAULT_TEMPLATES,
        max_image_bytes=getattr(settings, "image_max_bytes", None) or DEFAULT_MAX_BYTES,
        max_image_pixels=getattr(settings, "image_max_pixels", None) or DEFAULT_MAX_PIXELS,
        gallery_max_items=getattr(settings, "gallery_max_items", None) or MAX_ITEMS,
    )
    log.info("CLIP engine: %r", clip)
    return handlers.as_dict()
