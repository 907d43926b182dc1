"""worker.clip.handlers through the real in-process runner (LocalRunner) and a real redis-server."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import redis
from PIL import Image

from jobs.schemas import ClassifyJob, FindJob, GalleryItem, IndexJob
from tests.clip_support import tiny_clip
from worker.api import JobError
from worker.clip.handlers import ClipHandlers
from worker.runner import LocalRunner
from worker.setup import WorkerSetup

GUILD = 42


def png(seed: int, size=(40, 36)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def handlers(redis_url):
    return ClipHandlers(tiny_clip(), lambda: redis.Redis.from_url(redis_url))


@pytest.fixture
def runner(handlers):
    return LocalRunner(WorkerSetup(handlers=handlers.as_dict()))


def index_job(runner, seeds, guild=GUILD, **kw) -> IndexJob:
    items = [GalleryItem(item_id=f"m{s}:0", image=runner.put_blob(png(s)), message_link=f"https://d/{s}",
                         author=s, caption=f"cap {s}", thumbnail_url=f"https://t/{s}.png") for s in seeds]
    return IndexJob(guild=guild, add=items, **kw)


def test_classify_job(runner):
    events = []
    job = ClassifyJob(image=runner.put_blob(png(1)), labels=["red circle", "blue square", "Red Circle", "star"])
    out = runner.run(job, events.append)
    labels = out.data["labels"]
    assert [x["label"] for x in labels] and len(labels) == 3  # duplicates merged
    scores = [x["score"] for x in labels]
    assert scores == sorted(scores, reverse=True) and math.isclose(sum(scores), 1, abs_tol=1e-9)
    assert [e.type for e in events] == ["queued", "started", "result"]


def test_classify_bad_image_fails_clearly(runner):
    events = []
    job = ClassifyJob(image=runner.put_blob(b"%PDF-1.4 not an image"), labels=["a", "b"])
    with pytest.raises(JobError, match="looks like a PDF document"):
        runner.run(job, events.append)
    assert events[-1].type == "failed" and "PDF" in events[-1].reason


def test_index_then_find_by_image_and_text(runner, handlers):
    out = runner.run(index_job(runner, range(8)))
    assert out.data == {"added": 8, "deleted": 0, "unchanged": 0, "rejected": [], "total": 8}
    # by image: the same picture is its own nearest neighbour
    hits = runner.run(FindJob(guild=GUILD, image=runner.put_blob(png(5)), top=3)).data["hits"]
    assert hits[0]["item_id"] == "m5:0" and hits[0]["score"] == pytest.approx(1, abs=3e-3)
    assert hits[0] == dict(item_id="m5:0", score=hits[0]["score"], message_link="https://d/5", author=5,
                           caption="cap 5", thumbnail_url="https://t/5.png")
    # by text: with a random model semantics mean nothing, so the claim tested is exactly
    # "hits are the gallery ranked by the model's own text-image cosine", against brute force.
    clip = tiny_clip()
    text = clip.embed_texts(["a red circle"])[0]
    images = clip.embed_images([Image.open(io.BytesIO(png(s))).convert("RGB") for s in range(8)])
    want = sorted(range(8), key=lambda s: -float(images[s] @ text))
    data = runner.run(FindJob(guild=GUILD, query="a red circle", top=8)).data
    assert data["total"] == 8
    got = [h["item_id"] for h in data["hits"]]
    assert got[0] == f"m{want[0]}:0" or data["hits"][0]["score"] - data["hits"][1]["score"] < 2e-3
    for h in data["hits"]:
        s = int(h["item_id"][1:].split(":")[0])
        assert h["score"] == pytest.approx(float(images[s] @ text), abs=3e-3)


def test_reindex_embeds_nothing_and_replace_and_delete(runner):
    runner.run(index_job(runner, range(4)))
    calls = []
    hook = tiny_clip().model.vision_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = runner.run(index_job(runner, range(4)))
        assert out.data["added"] == 0 and out.data["unchanged"] == 4 and calls == []
        # delete + add of the same id in one job replaces it (and embeds it)
        replace = IndexJob(guild=GUILD, delete=["m1:0", "m3:0"],
                           add=[GalleryItem(item_id="m1:0", image=runner.put_blob(png(100)))])
        out = runner.run(replace)
        assert (out.data["added"], out.data["deleted"], out.data["total"]) == (1, 2, 3) and len(calls) == 1
    finally:
        hook.remove()
    hits = runner.run(FindJob(guild=GUILD, image=runner.put_blob(png(100)), top=1)).data["hits"]
    assert hits[0]["item_id"] == "m1:0" and hits[0]["caption"] is None


def test_one_bad_image_does_not_lose_the_batch(runner):
    job = index_job(runner, [1, 2])
    bad = GalleryItem(item_id="bad:0", image=runner.put_blob(b"hello, I am text"))
    out = runner.run(job.model_copy(update={"add": [*job.add, bad]}))
    assert out.data["added"] == 2
    assert out.data["rejected"] == [{"item_id": "bad:0", "reason": out.data["rejected"][0]["reason"]}]
    assert "looks like text" in out.data["rejected"][0]["reason"]
    with pytest.raises(JobError, match="looks like text"):  # a member adding one image is told why
        runner.run(IndexJob(guild=GUILD, add=[bad]))
    bad2 = GalleryItem(item_id="bad:1", image=runner.put_blob(png(3)[:50]))
    out = runner.run(IndexJob(guild=GUILD, add=[bad, bad2]))
    assert out.data["added"] == 0 and [r["item_id"] for r in out.data["rejected"]] == ["bad:0", "bad:1"]
    assert "corrupt or truncated" in out.data["rejected"][1]["reason"]


def test_find_needs_a_query_or_image_and_galleries_are_per_guild(runner, handlers):
    with pytest.raises(ValueError, match="give a text to search for, an image to find similar ones, or both"):
        FindJob(guild=GUILD)
    with pytest.raises(JobError, match="Give a text to search for, an image"):  # past the schema, still clear
        handlers.find(FindJob.model_construct(guild=GUILD, query=None, image=None, top=5), None)
    runner.run(index_job(runner, [1]))
    assert runner.run(FindJob(guild=GUILD + 1, query="anything")).data == {"hits": [], "total": 0}
    assert runner.run(FindJob(query="anything")).data["total"] == 0  # no guild: the local gallery


def test_a_second_worker_sees_the_first_workers_index(redis_url, runner):
    runner.run(index_job(runner, range(3)))
    other = LocalRunner(WorkerSetup(handlers=ClipHandlers(tiny_clip(), redis.Redis.from_url(redis_url)).as_dict()))
    hits = other.run(FindJob(guild=GUILD, image=other.put_blob(png(2)), top=1)).data["hits"]
    assert hits[0]["item_id"] == "m2:0"
    runner.run(index_job(runner, [9]))
    assert other.run(FindJob(guild=GUILD, image=other.put_blob(png(9)), top=1)).data["hits"][0]["item_id"] == "m9:0"


def test_find_by_text_and_image_ranks_by_their_normalised_sum(runner):
    runner.run(index_job(runner, range(6)))
    clip = tiny_clip()
    text = clip.embed_texts(["a red circle"])[0]
    image = clip.embed_images([Image.open(io.BytesIO(png(2))).convert("RGB")])[0]
    both = (text + image) / (text + image).norm()
    rows = clip.embed_images([Image.open(io.BytesIO(png(s))).convert("RGB") for s in range(6)])
    data = runner.run(FindJob(guild=GUILD, query="a red circle", image=runner.put_blob(png(2)), top=6)).data
    for h in data["hits"]:
        s = int(h["item_id"][1:].split(":")[0])
        assert h["score"] == pytest.approx(float(rows[s] @ both), abs=3e-3)
    assert [h["score"] for h in data["hits"]] == sorted((h["score"] for h in data["hits"]), reverse=True)


@pytest.mark.parametrize("blob,message", [
    (None, "The image to search with cannot be used: blob"),
    (b"%PDF-1.4 not an image", "The image to search with cannot be used: That is not a supported image: it looks "
                               "like a PDF document"),
    (png(1)[:60], "The image to search with cannot be used: The PNG image is corrupt or truncated"),
])
def test_find_with_a_missing_or_bad_image_fails_clearly(runner, blob, message):
    key = "0" * 32 if blob is None else runner.put_blob(blob)
    with pytest.raises(JobError, match=message):
        runner.run(FindJob(guild=GUILD, image=key, query="also text"))


def test_find_similar_to_a_gallery_item_without_its_blob(runner):
    runner.run(index_job(runner, range(6)))
    by_item = runner.run(FindJob(guild=GUILD, item="m2:0", top=3)).data["hits"]
    by_pixels = runner.run(FindJob(guild=GUILD, image=runner.put_blob(png(2)), top=4)).data["hits"]
    assert by_pixels[0]["item_id"] == "m2:0"  # the image itself; the item search leaves it out
    assert [h["item_id"] for h in by_item] == [h["item_id"] for h in by_pixels[1:]]
    for a, b in zip(by_item, by_pixels[1:]):
        assert a["score"] == pytest.approx(b["score"], abs=3e-3)  # float16 storage
    with pytest.raises(JobError, match="no longer in this server's gallery"):
        runner.run(FindJob(guild=GUILD, item="m99:0"))
    with pytest.raises(JobError, match="no longer in this server's gallery"):
        runner.run(FindJob(guild=GUILD + 1, item="m2:0"))  # another server's item
