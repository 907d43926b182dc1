"""End to end: the real bot (discord.py over sockets to the fake Discord), a real Redis, and a real
`python -m worker` subprocess running tiny random CLIP and VQGAN models from tests/factories.py.

One Redis and one worker serve the whole module (the worker loads torch once); each test has its
own fake Discord (its own guild, users and channels), so tests do not see each other's state.
"""
from __future__ import annotations

import asyncio
import io
import subprocess
import time

import pytest
from PIL import Image

from jobs.embedded import RedisServer, free_port
from jobs.local_worker import spawn_worker
from tests.bot_harness import Harness, png_bytes
from tests.factories import make_clip_dir, make_vqgan_files
from tests.fake_discord import EPHEMERAL, FakeDiscord


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory) -> dict:
    """Worker environment: tiny models, 32x32 images, few steps, frequent previews."""
    root = tmp_path_factory.mktemp("models")
    clip_dir = make_clip_dir(root / "clip")
    vq_cfg, vq_ckpt = make_vqgan_files(root / "vqgan")
    return {"CLIP_MODEL": str(clip_dir), "VQGAN_CONFIG": str(vq_cfg), "VQGAN_CHECKPOINT": str(vq_ckpt),
           "CLIPBOT_DEVICE": "cpu", "CLIPBOT_WORKER_ID": "e2e-worker", "CLIPBOT_PROGRESS_INTERVAL_S": "0.05",
           "CLIPBOT_HEARTBEAT_S": "0.5", "CLIPBOT_IMAGINE_WIDTH": "32", "CLIPBOT_IMAGINE_HEIGHT": "32",
           "CLIPBOT_IMAGINE_MIN_SIDE": "16", "CLIPBOT_IMAGINE_STEPS": "8", "CLIPBOT_IMAGINE_CUTOUTS": "4",
           "CLIPBOT_IMAGINE_PREVIEW_EVERY": "1", "CLIPBOT_IMAGINE_GIF_FRAMES": "4", "CLIPBOT_IMAGINE_GIF_SIZE": "32",
           "CLIPBOT_IMAGINE_PREVIEW_SIZE": "32", "CLIPBOT_IMAGINE_BATCH_SIZE": "2", "OMP_NUM_THREADS": "1",
           "CLIPBOT_SHUTDOWN_GRACE_S": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, worker_env):
    """(redis url, worker process) shared by the module's tests."""
    root = tmp_path_factory.mktemp("e2e")
    srv = RedisServer(root / "redis", port=free_port())
    srv.start()
    env = worker_env
    log_path = root / "worker.log"
    with open(log_path, "wb") as log:
        proc = spawn_worker(srv.url, env, stdout=subprocess.DEVNULL, stderr=log)
    proc.log_path = log_path
    yield srv.url, proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    srv.stop()


@pytest.fixture
async def h(stack, tmp_path):
    url, proc = stack
    fake = await FakeDiscord().start()
    harness = Harness(fake, url, tmp_path)
    harness.worker = proc
    deadline = time.monotonic() + 90  # the worker registers once its models are loaded
    while not await harness.queue.workers():
        assert proc.poll() is None, proc.log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "worker did not come up: " + proc.log_path.read_text()[-3000:]
        await asyncio.sleep(0.2)
    await harness.start_bot(edit_interval_s=0.3)
    try:
        yield harness
    finally:
        await harness.close()
    assert not fake.errors, fake.errors


def has_file(name):
    return lambda c: any(f.filename == name for f in c.files)


async def imagine(h, user, prompt, **opts):
    fake = h.fake
    inter = await fake.slash("imagine", user, prompt=prompt, **opts)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    msg = await fake.wait_for(lambda: next((m for m in fake.channel_messages(via="channel") if prompt in m["content"]), None))
    return inter, cb, msg


async def test_classify_with_the_real_worker(h):
    fake = h.fake
    inter = await fake.slash("classify", fake.user("ann"), image=fake.upload(png_bytes(), "s.png", "image/png", 64, 64),
                             labels="red circle, blue square, green star")
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert cb.json["type"] == 5 and cb.at - inter.sent_at < 3.0
    final = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                 where=lambda c: "```" in (c.json or {}).get("content", ""), timeout=60)
    rows = [line for line in final.json["content"].split("\n") if line.endswith("%")]
    assert sorted(r.split()[0] for r in rows) == ["blue", "green", "red"]
    pct = [float(r.rsplit(" ", 1)[-1].rstrip("%")) for r in rows]
    assert pct == sorted(pct, reverse=True) and abs(sum(pct) - 100) < 0.5


async def test_imagine_find_and_gallery_with_the_real_worker(h):
    fake = h.fake
    ann = fake.user("ann")
    inter, cb, msg = await imagine(h, ann, "a red circle", size="32x32", steps=80, seed=3)
    assert cb.at - inter.sent_at < 3.0 and "position" in cb.json["data"]["content"]
    mid = msg["id"]
    final = await fake.wait_call("PATCH", rf"/channels/\d+/messages/{mid}$", where=has_file("imagine.png"), timeout=90)
    edits = [c for c in fake.find_calls("PATCH", rf"/channels/\d+/messages/{mid}$") if c.status == 200]
    previews = [c for c in edits if has_file("preview.png")(c)]
    assert previews, edits  # at least one live preview reached Discord
    assert all(b.at - a.at >= 0.3 - 0.02 for a, b in zip(edits, edits[1:]))
    png = next(f for f in final.files if f.filename == "imagine.png")
    assert Image.open(io.BytesIO(png.data)).size == (32, 32)
    gif = next(f for f in final.files if f.filename == "timelapse.gif")
    assert gif.data.startswith(b"GIF8")
    assert "seed `3`" in final.json["content"] and "steps `80`" in final.json["content"]
    await fake.wait_for(lambda: fake.bot_reactions(mid) == ["👍", "👎"])
    bob = fake.user("bob")
    await fake.react(final_msg := fake._message_json(int(mid)), bob, "👍")
    await asyncio.sleep(0.3)
    inter = await fake.slash("top", bob)
    top = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    desc = top.json["data"]["embeds"][0]["description"]
    assert "a red circle" in desc and "1👍 0👎" in desc and mid in desc
    assert top.json["data"]["embeds"][0]["thumbnail"]["url"] == final_msg["attachments"][0]["url"]
    # a member's picture, added through the message menu
    art = fake.post_user_message(ann, "my blue square", [fake.upload(png_bytes(color=(0, 0, 255)), "b.png", "image/png", 64, 64)])
    inter = await fake.message_command("Add to gallery", ann, art)
    await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                         where=lambda c: "Added 1 image" in (c.json or {}).get("content", ""), timeout=60)
    # the finished generation was indexed too: /find sees both
    async def found():
        inter = await fake.slash("find", ann, query="a red circle", top=5)
        res = await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                                   where=lambda c: "matches" in (c.json or {}).get("content", "")
                                   or "nothing" in (c.json or {}).get("content", ""), timeout=60)
        return res.json.get("embeds", [])
    for _ in range(20):
        embeds = await found()
        if len(embeds) == 2:
            break
        await asyncio.sleep(0.3)
    links = {e["url"] for e in embeds}
    assert any(link.endswith(f"/{mid}") for link in links) and any(link.endswith(f"/{art['id']}") for link in links)
    assert all("score" in e["title"] and e["thumbnail"]["url"] for e in embeds)


async def test_cancel_and_restart_with_the_real_worker(h):
    fake = h.fake
    ann = fake.user("ann")
    _, _, msg = await imagine(h, ann, "a slow green star", steps=400)
    await fake.wait_call("PATCH", rf"/channels/\d+/messages/{msg['id']}$", where=has_file("preview.png"), timeout=60)
    inter = await fake.slash("queue", ann)
    text = (await fake.wait_call("POST", rf"/interactions/{inter.id}/")).json["data"]["content"]
    assert "imagine a slow green star" in text and "running on `e2e-worker`" in text
    assert "Workers online: **1**" in text  # "busy" follows the registry heartbeat, so not asserted
    inter = await fake.click(msg, f"clipbot:cancel:{(await h.queue.user_jobs(ann.id))[0].id}", ann)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "Cancelling" in cb.json["data"]["content"] and cb.json["data"]["flags"] & EPHEMERAL
    await fake.wait_call("PATCH", rf"/channels/\d+/messages/{msg['id']}$",
                         where=lambda c: f"cancelled by <@{ann.id}>" in (c.json or {}).get("content", ""), timeout=60)
    # a result that arrives while the bot is down is posted when it comes back
    _, _, msg = await imagine(h, ann, "a quick blue circle", steps=6)
    await h.stop_bot()
    stopped = time.monotonic()
    deadline = time.monotonic() + 60
    while (await h.queue.user_jobs(ann.id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not await h.queue.user_jobs(ann.id)  # finished while the bot was away
    assert not fake.find_calls("PATCH", rf"/channels/\d+/messages/{msg['id']}$", since=stopped + 0.5)
    await h.start_bot(edit_interval_s=0.3)
    await fake.wait_call("PATCH", rf"/channels/\d+/messages/{msg['id']}$", where=has_file("imagine.png"), timeout=30)


async def test_python_m_bot_single_machine_mode(worker_env, tmp_path):
    """`python -m bot` with REDIS_URL unset: embedded Redis + one local worker; Discord URLs from the env."""
    import os
    import signal
    import sys

    fake = await FakeDiscord().start()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(worker_env, DISCORD_TOKEN="test-token", DISCORD_API_BASE=fake.api_base,
               DISCORD_GATEWAY_URL=fake.gateway_url, DATA_DIR=str(tmp_path / "data"), CLIPBOT_EDIT_INTERVAL_S="0.3")
    env.pop("CLIPBOT_WORKER_ID")
    log_path = tmp_path / "bot.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bot"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await fake.wait_ready(timeout=60)
        ann = fake.user("ann")
        inter = await fake.slash("classify", ann, image=fake.upload(png_bytes(), "s.png", "image/png", 64, 64),
                                 labels="circle, square")
        cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/", timeout=30)
        assert cb.json["type"] == 5
        await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",  # the local worker answered
                             where=lambda c: "```" in (c.json or {}).get("content", ""), timeout=90)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        text = log_path.read_text()
        assert "started local worker" in text
        pid = int(text.split("started local worker pid ")[1].split()[0])
        await asyncio.sleep(0.2)
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await fake.stop()


def test_python_m_bot_requires_a_token(tmp_path):
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    res = subprocess.run([sys.executable, "-m", "bot"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "DISCORD_TOKEN is not set" in res.stderr


async def test_variations_refine_similar_and_frames_with_the_real_worker(h):
    """count:2 through the real worker: the grid and both pictures posted, Refine of picture 2 starts
    from its pixels as a new generation, Similar searches with it, and the step-time registry is filled."""
    fake = h.fake
    ann = fake.user("ann")
    _, _, msg = await imagine(h, ann, "a green star", size="32x32", steps=16, seed=5, count=2)
    mid = msg["id"]
    final = await fake.wait_call("PATCH", rf"/channels/\d+/messages/{mid}$", where=has_file("grid.png"), timeout=120)
    names = [f.filename for f in final.files]
    assert names[:3] == ["grid.png", "picture_1.png", "picture_2.png"]
    second = next(f.data for f in final.files if f.filename == "picture_2.png")
    stored = await fake.wait_for(lambda: (m := fake._message_json(int(mid)))["components"] and m)
    ids = [c["custom_id"] for row in stored["components"] for c in row["components"]]
    job_id = ids[0].rsplit(":", 1)[1]
    assert f"clipbot:refine:{job_id}:2" in ids and f"clipbot:similar:{job_id}:2" in ids
    assert f"clipbot:frame:{job_id}" in ids  # the worker kept earlier frames
    inter = await fake.click(stored, f"clipbot:refine:{job_id}:2", ann)
    cb = await fake.wait_call("POST", rf"/interactions/{inter.id}/")
    assert "Queued" in cb.json["data"]["content"]
    child = await fake.wait_for(lambda: next((m for m in fake.channel_messages(via="channel")
                                              if "refines" in m["content"]), None))
    assert f"/{mid})" in child["content"]
    [child_id] = await h.bot.generations.children(job_id)
    refine = await h.queue.job(child_id)
    assert (refine.parent, refine.parent_index, refine.seed) == (job_id, 2, 6)
    assert await h.queue.get_blob(refine.init_image) == second  # it starts from picture 2's pixels
    await fake.wait_call("PATCH", rf"/channels/\d+/messages/{child['id']}$", where=has_file("imagine.png"), timeout=120)
    inter = await fake.click(stored, f"clipbot:similar:{job_id}:2", ann)
    await fake.wait_call("PATCH", rf"/webhooks/\d+/{inter.token}/messages/",
                         where=lambda c: "best matches for your picture" in (c.json or {}).get("content", ""),
                         timeout=60)
    workers = await h.queue.workers()
    assert any(w.step_s for w in workers)  # measured while the jobs ran
