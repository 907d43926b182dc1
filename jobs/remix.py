"""Follow-up jobs built from a finished imagine Result: refine a picture, find similar images, pick a frame.

Torch-free: the bot calls these when a member presses a result's buttons. An imagine Result names
its pictures and frames by blob *names* in `data` (see worker/imagine/variations.py and frames.py);
`Result.blobs` maps those names to blob keys. These helpers do that lookup, so a caller never
builds a blob name itself, and treat count=1 results (no `pictures` list) as one picture.
"""
from __future__ import annotations

from typing import Any

from jobs.schemas import FindJob, ImagineJob, Result
from jobs.validation import JobError


def pictures(result: Result) -> list[dict[str, Any]]:
    """Every picture of an imagine Result, 1-based `index` first:
    [{"index", "seed", "clip_score", "png": blob key, "frames": [{"step", "key"}]}]."""
    data = result.data
    listed = data.get("pictures") or [{"index": 1, "seed": data.get("seed"), "clip_score": data.get("clip_score"),
                                       "png": "png", "frames": data.get("frames", [])}]
    out = []
    for p in listed:
        frames = [{"step": f["step"], "key": result.blobs[f["blob"]]} for f in p.get("frames", [])
                  if f["blob"] in result.blobs]
        out.append({"index": p["index"], "seed": p["seed"], "clip_score": p.get("clip_score"),
                    "png": result.blobs[p["png"]], "frames": frames})
    return out


def picture(result: Result, index: int = 1) -> dict[str, Any]:
    found = pictures(result)
    for p in found:
        if p["index"] == index:
            return p
    raise JobError(f"That generation has no picture {index}; it made {len(found)}.")


def frame_key(result: Result, index: int = 1, step: int | None = None) -> str:
    """Blob key of picture `index` after `step` steps (None: the final picture)."""
    p = picture(result, index)
    if step is None:
        return p["png"]
    for f in p["frames"]:
        if f["step"] == step:
            return f["key"]
    steps = ", ".join(str(f["step"]) for f in p["frames"]) or "none"
    raise JobError(f"Picture {index} kept no frame at step {step} (kept: {steps}).")


def refine_job(result: Result, index: int = 1, *, steps: int | None = None, step: int | None = None,
               **fields: Any) -> ImagineJob:
    """The same prompt, size and seed again, starting from picture `index` (or its frame at `step`).

    steps: Settings.refine_steps, or None for the parent's own steps. `fields`: user, guild,
    channel, origin... of the new job. The parent is recorded as `parent` / `parent_index`.
    """
    data = result.data
    if "prompt" not in data:
        raise JobError("Only a generated picture can be refined.")
    p = picture(result, index)
    return ImagineJob(
        prompt=data["prompt"], width=data.get("width", 0), height=data.get("height", 0),
        steps=steps or data.get("steps", 0), seed=p["seed"], init_image=frame_key(result, index, step),
        parent=result.job_id, parent_index=index if data.get("count", 1) > 1 else None, **fields,
    )


def similar_job(result: Result, index: int = 1, *, top: int = 5, **fields: Any) -> FindJob:
    """Find the gallery images most like picture `index` of a generation."""
    return FindJob(image=picture(result, index)["png"], top=top, **fields)
