"""Shape fidelity of /imagine, judged independently: pictures painted by the worker's batched engine
at its default settings, each named by the judge (`judge.py`, trained on the foreign renderer only),
never by the CLIP the picture was optimised against.

Three panels, each prompt painted with two seeds:
- singles: all 32 "a {colour} {shape}" prompts; the judge names the colour and the shape;
- backgrounds: "a {colour} {shape} on a {background} background"; also the background colour;
- pairs: "a {colour} {shape} and a {colour} {shape}"; each asked object is cut out by its colour
  (pixels nearest the colour's foreign shade) onto the picture's background and judged alone:
  both objects must be there with the asked shapes.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from worker.training import foreign
from worker.training import judge as J

COLOURS, SHAPES = foreign.COLOUR_NAMES, foreign.SHAPE_NAMES
SINGLES = [{"colour": c, "shape": s} for c in COLOURS for s in SHAPES]
BACKGROUNDS = [{"colour": c, "shape": SHAPES[i % 4], "background": COLOURS[(i + 3) % 8]} for i, c in enumerate(COLOURS)]
PAIRS = [{"objects": [(c, SHAPES[i % 4]), (COLOURS[(i + 5) % 8], SHAPES[(i + 1) % 4])]} for i, c in enumerate(COLOURS)]
PANELS = {"singles": SINGLES, "backgrounds": BACKGROUNDS, "pairs": PAIRS}


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def prompt_of(case: dict) -> str:
    if "objects" in case:
        return " and ".join(f"{article(c)} {c} {s}" for c, s in case["objects"])
    text = f"{article(case['colour'])} {case['colour']} {case['shape']}"
    return text + (f" on {article(case['background'])} {case['background']} background" if "background" in case else "")


def paint(clip_dir: str | Path, vqgan_dir: str | Path, jobs: list[dict], config=None) -> Iterator[tuple[dict, Image.Image]]:
    """(job, picture) for each {"id", "prompt", "seed"} job, through the worker's batched engine
    (4 jobs at a time; on a CPU each picture is bit-identical to its solo run)."""
    from jobs.settings import ImagineConfig
    from worker.api import QuietContext
    from worker.clip.model import load_clip
    from worker.imagine.engine import ImagineEngine
    from worker.imagine.vqgan import load_vqgan

    vqgan_dir = Path(vqgan_dir)
    # The panel measures pictures, not speed: a loaded machine must not stop a job half-way.
    config = (config or ImagineConfig()).model_copy(update={"batch_size": 4, "time_budget_s": 24 * 3600.0})
    engine = ImagineEngine(load_clip(str(clip_dir), "cpu"), load_vqgan(vqgan_dir / "model.yaml", vqgan_dir / "last.ckpt", "cpu"), config)
    by_id = {job["id"]: job for job in jobs}
    pending = [{"steps": config.steps, **job} for job in jobs]
    while pending or engine.active:
        while pending and engine.active < engine.capacity:
            job = pending.pop(0)
            engine.add({k: job[k] for k in ("id", "prompt", "seed", "steps")}, QuietContext())
        engine.step()
        for job, out in engine.pop_finished():
            if isinstance(out, BaseException):
                raise out
            yield by_id[job.id], Image.open(io.BytesIO(out.blobs["png"])).convert("RGB")


def panel_jobs(panels: tuple[str, ...] = tuple(PANELS), seeds: tuple[int, ...] = (12345, 12346),
               per_panel: int | None = None) -> list[dict]:
    jobs = []
    for name in panels:
        for i, case in enumerate(PANELS[name][:per_panel]):
            for seed in seeds:
                jobs.append({"id": f"{name}-{i:02d}-{seed}", "panel": name, "case": case, "prompt": prompt_of(case), "seed": seed + 97 * i})
    return jobs


# --- judging -------------------------------------------------------------------------------------


def _nearest_colour(rgb: np.ndarray) -> np.ndarray:
    names = list(foreign.FOREIGN_SHADES)
    refs = np.array([foreign.FOREIGN_SHADES[n] for n in names], float)
    return ((rgb[..., None, :].astype(float) - refs) ** 2).sum(-1).argmin(-1)


def cut_out(img: Image.Image, colour: str) -> Image.Image | None:
    """The pixels nearest `colour` alone on the picture's background (its median border pixel),
    in a square around them; None when fewer than 1% of the picture has that colour."""
    arr = np.asarray(img.convert("RGB"))
    mask = _nearest_colour(arr) == list(foreign.FOREIGN_SHADES).index(colour)
    if mask.sum() < 0.01 * mask.size:
        return None
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    out = np.where(mask[..., None], arr, np.median(border, 0).astype(np.uint8))
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(ys.max() - ys.min(), xs.max() - xs.min(), 8) / 2 / 0.55  # the object spans ~55% of the square
    pad = int(np.ceil(half)) + 1
    padded = np.pad(out, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    y0, x0 = int(round(cy - half)) + pad, int(round(cx - half)) + pad
    side = int(round(2 * half))
    return Image.fromarray(padded[y0 : y0 + side, x0 : x0 + side])


def judge_picture(model: J.Judge, job: dict, img: Image.Image) -> dict:
    case = job["case"]
    row = {"prompt": job["prompt"], "seed": job["seed"], "panel": job["panel"]}
    if "objects" in case:
        found = []
        for colour, shape in case["objects"]:
            crop = cut_out(img, colour)
            got = J.judge(model, [crop])[0] if crop is not None else {"colour": None, "shape": None}
            found.append({"asked": f"{colour} {shape}", "judged": f"{got['colour']} {got['shape']}",
                          "ok": got["colour"] == colour and got["shape"] == shape})
        row.update(objects=found, both_present=all(f["ok"] for f in found), one_present=any(f["ok"] for f in found))
        return row
    got = J.judge(model, [img])[0]
    row.update(asked=f"{case['colour']} {case['shape']}", judged=f"{got['colour']} {got['shape']} on {got['background']}", shape_p=got["shape_p"],
               colour_ok=got["colour"] == case["colour"], shape_ok=got["shape"] == case["shape"])
    row["both_ok"] = row["colour_ok"] and row["shape_ok"]
    if "background" in case:
        row["background_ok"] = got["background"] == case["background"]
        row["all_ok"] = row["both_ok"] and row["background_ok"]
    return row


def summarise(rows: list[dict]) -> dict:
    out: dict = {}
    for name in PANELS:
        rs = [r for r in rows if r["panel"] == name]
        if not rs:
            continue
        keys = ("both_present", "one_present") if name == "pairs" else ("colour_ok", "shape_ok", "both_ok") + (
            ("background_ok", "all_ok") if name == "backgrounds" else ())
        out[name] = {"pictures": len(rs), **{k.removesuffix("_ok") + "_rate": float(np.mean([r[k] for r in rs])) for k in keys}}
        if name == "singles":  # which shapes fail is what a change to the models or settings moves
            by_shape: dict[str, list[bool]] = {}
            for r in rs:
                by_shape.setdefault(r["asked"].split()[-1], []).append(r["both_ok"])
            out[name]["both_rate_by_shape"] = {s: float(np.mean(v)) for s, v in sorted(by_shape.items())}
    return out


def fidelity_report(clip_dir: str | Path, vqgan_dir: str | Path, seed: int = 12345, panels: tuple[str, ...] = tuple(PANELS),
                    config=None, log: Callable[[str], None] = print, save_dir: Path | None = None,
                    per_panel: int | None = None) -> dict:
    """Paint the panels (the first `per_panel` prompts of each; all by default) with two seeds
    (seed, seed + 1) and judge every picture."""
    model = J.load_judge()
    jobs = panel_jobs(panels, (seed, seed + 1), per_panel)
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.time()
    for job, img in paint(clip_dir, vqgan_dir, jobs, config):
        if save_dir is not None:
            img.save(Path(save_dir) / f"{job['id']}.png")
        rows.append(judge_picture(model, job, img))
        log(f"eval fidelity {len(rows)}/{len(jobs)}: {job['prompt']!r} -> {rows[-1].get('judged') or rows[-1].get('objects')}")
    return {**summarise(rows), "seconds": round(time.time() - t0, 1), "rows": rows}
