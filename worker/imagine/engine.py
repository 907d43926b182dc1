"""VQGAN+CLIP: optimise a VQGAN latent so that CLIP sees the prompts in the decoded image.

The loop follows Katherine Crowson's notebook (as in nerdyrodent/VQGAN-CLIP and pixray):
a start latent (by default an encoded plain grey canvas, or the background colour the prompt
names, held near it by Crowson's init-weight term; or random codebook entries; or an encoded init
image), straight-through vector quantisation, decode, many random cutouts with augmentations, CLIP
image embeddings, a squared spherical distance to each prompt's embedding times its weight, Adam,
and the latent clamped to the codebook's range after each step.

`ImagineEngine` runs up to K jobs of the same size as one batch. Each job has its own latent,
Adam state, seed and torch.Generator, prompts and step count; jobs join and leave between steps.
Every op in the batched step is per-sample (convs, GroupNorm, per-image attention, CLIP, grid
sampling, per-job sums), so a job's result does not depend on its batch-mates beyond
floating-point noise from different kernel shapes (tested: PSNR >= 40 dB against a solo run).

Size policy: the batch takes the size of the oldest waiting job when it is empty; jobs are
admitted strictly first-come first-served, so a job of another size waits until the current
batch drains and then starts the next batch (it waits at most the remaining steps of the jobs
ahead of it, and is never overtaken by later jobs of the running size).

Reproducibility: on the CPU the same job (prompt, seed, size, steps, options) and the same
config give a bit-identical PNG, whether run alone or (up to float noise) batched. On a GPU,
grid_sample's backward uses atomic adds, so runs with the same seed look alike but are not
bit-identical unless torch.use_deterministic_algorithms(True) is set (slower).
"""
from __future__ import annotations

import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from pydantic import ValidationError
from torch import Tensor

from jobs.schemas import ImagineJob
from jobs.settings import ImagineConfig  # the engine's knobs (CLIPBOT_IMAGINE_<FIELD>), validated there
from jobs.validation.images import decode_image, encode_png
from jobs.validation.imagine import resolve_size, resolve_steps
from jobs.validation.prompts import Prompt, parse_prompts
from worker.api import JobCancelled, JobContext, JobError, Outcome
from worker.imagine import media
from worker.imagine.canvas import background_rgb
from worker.imagine.frames import FrameKeeper
from worker.imagine.maths import clamp_with_grad, cutouts, spherical_distance
from worker.imagine.memory import MemoryPlanner, run_in_parts
from worker.imagine.vocabulary import note_for
from worker.imagine.vqgan import VQGAN

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """One job's state inside the engine."""

    job: ImagineJob
    ctx: JobContext
    width: int
    height: int
    steps: int
    seed: int
    prompt_text: str
    targets: Tensor  # (P, D) unit CLIP embeddings: text prompts then image prompts
    weights: Tensor  # (P,)
    pos_targets: Tensor  # (Q, D) and (Q,): what clip_score measures against
    pos_weights: Tensor
    gen: torch.Generator
    z: Tensor  # (1, C, h, w) leaf
    z_init: Tensor | None
    init_weight: float
    opt: torch.optim.Optimizer
    frame_every: int
    keeper: FrameKeeper  # full-size frames a member can pick instead of the final picture
    step: int = 0
    loss: float = math.nan
    started: float = 0.0
    frames: list[np.ndarray] = field(default_factory=list)


class ImagineEngine:
    """Runs up to `capacity` imagine jobs of one size together. Not thread-safe: one loop drives it.

    The worker loop calls `add(job, ctx)` while `active < capacity`, then `step()` and
    `pop_finished()` until `active` is 0. `add` raises JobError for bad input at once.
    """

    def __init__(self, clip, vqgan: VQGAN, config: ImagineConfig | None = None) -> None:
        self.clip, self.vqgan = clip, vqgan
        self.config = config or ImagineConfig()
        self.device = vqgan.device
        self.model_name = f"{vqgan.name}+{Path(str(getattr(clip, 'name', 'clip'))).name}"
        clip.model.requires_grad_(False)  # we need gradients for pixels only
        # On a CPU, oneDNN picks batch-size-dependent conv kernels whose rounding differs by ~1e-6,
        # and through the hard argmin of vector quantisation such noise can grow into a visibly
        # different picture. So on a CPU the decoder's convs run image by image (the rest of the
        # decoder batched) and a batched job is bit-identical to its solo run; on a GPU all batched.
        per_image = self.config.decode_per_image
        self._decode_per_image = self.device.type == "cpu" if per_image == "auto" else per_image
        self._warned_no_encoder = False
        self.memory: MemoryPlanner | None = None  # GPU memory planning, set on a GPU (handlers.build)
        self._waiting: deque[_Run] = deque()
        self._running: list[_Run] = []
        self._finished: list[tuple[ImagineJob, Outcome | BaseException]] = []

    # ------------------------------------------------------------------ the loop's API

    @property
    def capacity(self) -> int:
        """How many jobs the engine holds at most (running + waiting)."""
        return self.config.batch_size

    @property
    def active(self) -> int:
        """Jobs held and not yet popped as finished (running + waiting)."""
        return len(self._running) + len(self._waiting)

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the running batch, None when nothing runs."""
        return (self._running[0].width, self._running[0].height) if self._running else None

    @property
    def max_pixels(self) -> int:
        """The largest picture one job may ask for here: the configured budget, lowered to what
        the GPU memory planner has learnt fits (published in the worker registry)."""
        fits = self.memory.max_pixels() if self.memory is not None else None
        return self.config.max_pixels if fits is None else min(self.config.max_pixels, fits)

    def add(self, job: ImagineJob | Mapping[str, Any], ctx: JobContext) -> ImagineJob:
        """Validate and prepare a job (prompts embedded, images decoded); it starts at a later step()."""
        if self.active >= self.capacity:
            raise RuntimeError(f"engine full ({self.capacity} jobs)")
        job = as_job(job)
        self._waiting.append(self._prepare(job, ctx))
        return job

    def step(self) -> None:
        """One optimisation step for every running job (admitting waiting ones first)."""
        self._drop_cancelled_waiting()
        self._admit()
        runs = []
        for run in list(self._running):
            try:
                self._check(run)
                runs.append(run)
            except Exception as e:  # cancelled, over budget, or its context failed: this job only
                self._retire(run, e)
        if not runs:
            return
        try:  # out of memory splits the batch (memory.py): only a job too big alone fails
            runs, parts, too_big = run_in_parts(self._optimise, runs, self.memory, runs[0].width * runs[0].height)
        except Exception as e:  # any other batch-wide failure fails every job in it
            for run in runs:
                self._retire(run, e)
            return
        for run, e in too_big:
            self._retire(run, e)
        images = torch.cat(parts) if len(parts) > 1 else parts[0] if parts else None
        for k, run in enumerate(runs):
            try:
                self._report(run, images[k])
            except Exception as e:  # e.g. the progress channel failed: this job only
                self._retire(run, e)
        done = [r for r in runs if r.step >= r.steps and r in self._running]
        if done:
            self._render_results(done)

    def pop_finished(self) -> list[tuple[ImagineJob, Outcome | BaseException]]:
        out, self._finished = self._finished, []
        return out

    # ------------------------------------------------------------------ validation

    def resolve_size(self, width: int, height: int) -> tuple[int, int]:
        w, h = resolve_size(width, height, self.config, self.vqgan.factor)
        if self.memory is not None and (too_big := self.memory.refusal(w, h)):
            raise JobError(too_big)
        return w, h

    def resolve_steps(self, steps: int) -> int:
        return resolve_steps(steps, self.config)

    def _prepare(self, job: ImagineJob, ctx: JobContext) -> _Run:
        cfg = self.config
        if job.count != 1:  # VariationsEngine splits such a job into count=1 jobs before they get here
            raise JobError("This engine makes one picture per job; serve variations with VariationsEngine.")
        prompts = parse_prompts(job.prompt)
        width, height = self.resolve_size(job.width, job.height)
        steps = self.resolve_steps(job.steps)
        seed = job.seed if job.seed is not None else secrets.randbelow(2**63)
        device = self.device

        targets = [self.clip.embed_texts([p.text for p in prompts]).to(device, torch.float32)]
        weights = [p.weight for p in prompts]
        for i, ip in enumerate(job.image_prompts, 1):  # weights are bounded by the schema
            targets.append(self._embed_image(self._load_image(ctx, ip.image, f"image prompt {i}")))
            weights.append(ip.weight)
        targets_t = torch.cat(targets)
        weights_t = torch.tensor(weights, dtype=torch.float32, device=device)
        if abs(math.fsum(weights)) < 1e-6:
            raise JobError("The prompt and image prompt weights sum to zero: give something a positive weight.")
        positive = weights_t > 0

        gen = torch.Generator(device=device).manual_seed(seed)
        fh, fw = height // self.vqgan.factor, width // self.vqgan.factor
        z_init, init_weight = None, job.init_weight
        if job.init_image:
            img = ImageOps.fit(self._load_image(ctx, job.init_image, "init image"), (width, height), Image.LANCZOS)
            z = self.vqgan.encode(_pil_to_tensor(img, device))
            z_init = z.clone() if job.init_weight > 0 else None
        else:
            z = self._canvas(fh, fw, prompts)
            if z is None:
                z = self.vqgan.random_latent(fh, fw, gen, cfg.init_grid)
            elif cfg.canvas_weight > 0:
                z_init, init_weight = z.clone(), cfg.canvas_weight
        z = z.contiguous().requires_grad_(True)  # NCHW like the batch's torch.cat: same kernels
        return _Run(
            job=job, ctx=ctx, width=width, height=height, steps=steps, seed=seed, prompt_text=job.prompt,
            targets=targets_t, weights=weights_t,
            pos_targets=targets_t[positive], pos_weights=weights_t[positive],
            gen=gen, z=z, z_init=z_init, init_weight=init_weight,
            opt=torch.optim.Adam([z], lr=cfg.lr),
            frame_every=max(1, math.ceil(steps / max(1, cfg.gif_frames - 1))), keeper=FrameKeeper(steps, cfg.frames),
        )

    def _canvas(self, fh: int, fw: int, prompts: list[Prompt]) -> Tensor | None:
        """The latent of a plain canvas at this size: the background colour the prompts name
        (canvas.py, with canvas_from_prompt), else the configured colour. None: start from random
        codes, as configured."""
        rgb = self.config.canvas_rgb()
        if rgb is None:
            return None
        if self.config.canvas_from_prompt:
            rgb = background_rgb([(p.text, p.weight) for p in prompts]) or rgb
        if not self.vqgan.has_encoder:  # a decoder-only checkpoint cannot encode the canvas
            if not self._warned_no_encoder:
                log.warning("the VQGAN checkpoint %s has no encoder: pictures start from random codes, "
                            "not the %s canvas", self.vqgan.checkpoint_path, self.config.canvas)
                self._warned_no_encoder = True
            return None
        return self.vqgan.plain_latent(rgb, fh, fw)  # one encoder pass per job, nothing kept between jobs

    def _load_image(self, ctx: JobContext, key: str, what: str) -> Image.Image:
        try:
            return decode_image(ctx.blob(key))
        except JobError as e:
            raise JobError(f"The {what} cannot be used: {e}") from None

    @torch.no_grad()
    def _embed_image(self, img: Image.Image) -> Tensor:
        s = self.clip.image_size
        x = _pil_to_tensor(ImageOps.fit(img, (s, s), Image.LANCZOS), self.device)
        return self.clip.embed_pixels(x).to(self.device, torch.float32)

    # ------------------------------------------------------------------ scheduling

    def _drop_cancelled_waiting(self) -> None:
        for run in list(self._waiting):
            if run.ctx.cancelled():
                self._waiting.remove(run)
                self._finished.append((run.job, JobCancelled()))

    def _admit(self) -> None:
        size = self.size
        while self._waiting and len(self._running) < self.capacity:
            head = self._waiting[0]
            if size is not None and (head.width, head.height) != size:
                break  # first come, first served: it starts the next batch when this one drains
            if self.memory is not None and not self.memory.admits(len(self._running) + 1, head.width * head.height):
                break  # would not fit in GPU memory: it joins when a running job finishes
            self._waiting.popleft()
            head.started = time.monotonic()
            self._running.append(head)
            size = (head.width, head.height)

    def _check(self, run: _Run) -> None:
        if run.ctx.cancelled():
            raise JobCancelled()
        elapsed = time.monotonic() - run.started
        if elapsed > self.config.time_budget_s:
            raise JobError(
                f"Stopped after {run.step} of {run.steps} steps: the job ran past this worker's time budget "
                f"of {self.config.time_budget_s:g} s. Try fewer steps or a smaller size."
            )

    def _retire(self, run: _Run, result: Outcome | BaseException) -> None:
        self._running.remove(run)
        self._finished.append((run.job, result))

    # ------------------------------------------------------------------ the batched step

    def _optimise(self, runs: list[_Run]) -> Tensor:
        cfg = self.config
        z = torch.cat([r.z for r in runs]) if len(runs) > 1 else runs[0].z
        image = self.synth(z)  # (K, 3, H, W) in [0, 1]
        emb = self.clip.embed_pixels(self.cutouts(image, [r.gen for r in runs])).float()
        emb = emb.view(len(runs), cfg.cutouts, 1, -1)
        p = max(len(r.weights) for r in runs)  # pad prompts to the batch's longest list with weight 0
        targets = torch.stack([F.pad(r.targets, (0, 0, 0, p - len(r.weights))) for r in runs])
        weights = torch.stack([F.pad(r.weights, (0, p - len(r.weights))) for r in runs])
        losses = (spherical_distance(emb, targets[:, None]).mean(1) * weights).sum(1)  # (K,)
        if any(r.z_init is not None for r in runs):  # Crowson's init weight: stay near the init latent
            zero = losses.new_zeros(())
            losses = losses + torch.stack([
                F.mse_loss(r.z, r.z_init) * (r.init_weight / 2) if r.z_init is not None else zero for r in runs
            ])
        for r in runs:
            r.opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # jobs share no parameters: each z gets exactly its own gradient
        for r, loss in zip(runs, losses.tolist()):
            r.opt.step()
            self.vqgan.clamp_(r.z)
            r.loss = loss
        return image.detach()

    def _report(self, r: _Run, image: Tensor) -> None:
        """Timelapse frames and progress after a step. `image` is the picture this step's loss was
        measured on, one update behind z: close enough for a preview, and free."""
        cfg = self.config
        want_frame = r.step % r.frame_every == 0  # the timelapse starts from the initial picture
        want_pick = r.keeper.wants(r.step)  # `image` is the picture after r.step updates
        r.step += 1
        want_preview = cfg.preview_every > 0 and r.step % cfg.preview_every == 0 and r.step < r.steps
        if not (want_frame or want_preview or want_pick):
            if r.step == r.steps:
                r.ctx.progress(r.step, r.steps, r.loss, None)  # the Result carries the final picture
            return
        frame = media.to_uint8(image)
        if want_pick:
            r.keeper.keep(r.step - 1, frame)
        if want_frame:
            r.frames.append(np.asarray(media.fit_crisp(frame, cfg.gif_size)))  # keep only what the GIF needs
        if want_preview:
            r.ctx.progress(r.step, r.steps, r.loss, media.preview_png(frame, cfg.preview_size))
        elif r.step == r.steps:
            r.ctx.progress(r.step, r.steps, r.loss, None)

    def synth(self, z: Tensor) -> Tensor:
        """Latents -> images in [0, 1] through the straight-through quantiser and the decoder."""
        x = self.vqgan.decode(self.vqgan.quantize(z), sample_wise=self._decode_per_image)
        return clamp_with_grad(x.add(1).div(2), 0.0, 1.0)

    def cutouts(self, image: Tensor, gens: list[torch.Generator]) -> Tensor:
        """The configured cutouts of each image, at CLIP's input size (see maths.cutouts)."""
        return cutouts(image, gens, self.config, self.clip.image_size)

    # ------------------------------------------------------------------ results

    @torch.inference_mode()
    def _render_results(self, runs: list[_Run]) -> None:
        z = torch.cat([r.z.detach() for r in runs])
        images = self.synth(z)
        s = self.clip.image_size
        side = min(images.shape[-2:])
        square = _center_crop(images, side)
        emb = self.clip.embed_pixels(F.interpolate(square, size=(s, s), mode="bilinear", antialias=True)).float()
        for k, r in enumerate(runs):
            try:
                self._retire(r, self._outcome(r, images[k], emb[k]))
            except Exception as e:
                self._retire(r, e)

    def _outcome(self, r: _Run, image: Tensor, emb: Tensor) -> Outcome:
        cfg = self.config
        frame = media.to_uint8(image)
        r.frames.append(np.asarray(media.fit_crisp(frame, cfg.gif_size)))
        if len(r.pos_weights):
            sims = r.pos_targets @ emb
            clip_score = float((sims * r.pos_weights).sum() / r.pos_weights.sum())
        else:
            clip_score = math.nan
        text = {"prompt": r.prompt_text, "seed": str(r.seed), "steps": str(r.steps), "model": self.model_name,
                "size": f"{r.width}x{r.height}", "software": "clipbot VQGAN+CLIP"}
        png = encode_png(Image.fromarray(frame), text=text)
        gif = media.encode_gif(r.frames, cfg.gif_max_bytes, cfg.gif_frame_ms, max_side=cfg.gif_size)
        data = {
            "prompt": r.prompt_text, "seed": r.seed, "steps": r.steps, "width": r.width, "height": r.height,
            "seconds": round(time.monotonic() - r.started, 3),
            "clip_score": None if math.isnan(clip_score) else round(clip_score, 4),
            "model": self.model_name, "loss": round(r.loss, 5),
        }
        if r.job.parent is not None:
            data.update(parent=r.job.parent, parent_index=r.job.parent_index)
        if note := note_for(r.prompt_text, self.clip.name):  # the demo CLIP knows no word of the prompt
            data["note"] = note
        data["frames"], frames = r.keeper.encode(text, cfg.frames_max_bytes)
        return Outcome(data=data, blobs={"png": png, "gif": gif, **frames})


def as_job(job: ImagineJob | Mapping[str, Any]) -> ImagineJob:
    if isinstance(job, ImagineJob):
        return job
    try:
        return ImagineJob(**job)
    except ValidationError as e:
        why = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'request'}: {err['msg']}" for err in e.errors())
        raise JobError(f"Invalid imagine request: {why}.") from None


def _pil_to_tensor(img: Image.Image, device) -> Tensor:
    x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)
    return x.permute(2, 0, 1)[None].to(device)


def _center_crop(x: Tensor, side: int) -> Tensor:
    h, w = x.shape[-2:]
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top:top + side, left:left + side]


def imagine(clip, vqgan: VQGAN, job: ImagineJob | Mapping[str, Any], ctx: JobContext,
            config: ImagineConfig | None = None) -> Outcome:
    """Run one job alone (the CLI's path): the engine with a batch of one."""
    return run_alone(ImagineEngine(clip, vqgan, config), job, ctx)


def run_alone(engine, job: ImagineJob | Mapping[str, Any], ctx: JobContext) -> Outcome:
    """Step a batch engine (ImagineEngine or a wrapper of it) through one job; its Outcome or its error."""
    engine.add(job, ctx)
    while engine.active:
        engine.step()
    [(_, result)] = engine.pop_finished()
    if isinstance(result, BaseException):
        raise result
    return result
