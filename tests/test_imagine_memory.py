"""GPU memory safety, tested on the CPU: out-of-memory splitting (injected errors), the memory
planner's admission policy, refusals of sizes that can never fit, and autocast decoding."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.factories import make_vqgan_files
from tests.imagine_support import RecordingContext, _one_thread  # noqa: F401
from worker.api import JobError
from worker.imagine.memory import MemoryPlanner, TooBigForMemory, is_oom, run_in_parts

ROOT = Path(__file__).resolve().parent.parent


def _oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_split_on_oom_keeps_order_and_runs_every_job_once():
    calls = []

    def step(part):
        calls.append(list(part))
        if len(part) > 2:
            raise _oom()
        return torch.tensor(part, dtype=torch.float32)[:, None]

    done, outs, failed = run_in_parts(step, [1, 2, 3, 4, 5])
    assert done == [1, 2, 3, 4, 5] and not failed
    assert torch.cat(outs).flatten().tolist() == [1, 2, 3, 4, 5]
    assert calls == [[1, 2, 3, 4, 5], [1, 2], [3, 4, 5], [3], [4, 5]]


def test_a_job_too_big_alone_fails_alone_and_other_errors_propagate():
    def step(part):
        if "big" in part:
            raise RuntimeError("CUDA error: out of memory")  # the older spelling
        return torch.zeros(len(part), 1)

    planner = MemoryPlanner(1000, 1.0)
    done, _, failed = run_in_parts(step, ["a", "big", "b"], planner, pixels=64)
    assert done == ["a", "b"] and [r for r, _ in failed] == ["big"]
    assert isinstance(failed[0][1], TooBigForMemory) and isinstance(failed[0][1], JobError)
    assert "does not fit in this worker's GPU memory" in str(failed[0][1])
    assert planner.refusal(8, 8) is not None  # that size is refused from now on

    def broken(part):
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        run_in_parts(broken, ["a", "b"])
    assert is_oom(_oom()) and not is_oom(RuntimeError("shape mismatch"))


def test_planner_admits_only_what_fits():
    allocated = {"now": 100}
    peak = {"v": 0}
    p = MemoryPlanner(2000, 0.5, allocated=lambda: allocated["now"], peak=lambda: peak["v"])  # limit 1000
    assert p.admits(1, 4096) and not p.admits(2, 4096)  # unknown size: one job first, to measure
    p.begin()
    peak["v"] = 100 + 2 * 300  # a step of two jobs peaked at 300 bytes each over the base
    p.observe(2, 4096)
    assert p.per_job(4096) == 300
    assert p.admits(3, 4096) and not p.admits(4, 4096)  # 100 + 3 x 300 <= 1000 < 100 + 4 x 300
    assert p.per_job(1024) == 300  # a smaller size: bounded by the measured larger one
    assert p.per_job(8192) == 600  # a larger one: scaled by pixels
    assert p.refusal(64, 64) is None
    assert "does not fit" in p.refusal(128, 128)  # 16384 px -> 1200 bytes > 900 left
    p.out_of_memory(3, 4096)  # three did not fit after all: plan at most two
    assert p.admits(2, 4096) and not p.admits(3, 4096)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from worker.clip.model import load_clip
    from worker.imagine.vqgan import load_vqgan

    clip = load_clip(ROOT / "models" / "clip-shapes", "cpu")
    return clip, load_vqgan(*make_vqgan_files(tmp_path_factory.mktemp("vq")), "cpu")


def _engine(models, **cfg):
    from jobs.settings import ImagineConfig
    from worker.imagine.engine import ImagineEngine

    base = dict(width=32, height=32, min_side=8, steps=4, cutouts=4, preview_every=0, gif_frames=4, batch_size=4)
    return ImagineEngine(*models, ImagineConfig(**{**base, **cfg}))


def _run_all(engine, jobs, max_running=None):
    for j in jobs:
        engine.add(j, RecordingContext())
    results, seen = {}, 0
    while engine.active:
        engine.step()
        seen = max(seen, len(engine._running))
        for job, result in engine.pop_finished():
            results[job.prompt] = result
    return results, seen


JOBS = [{"prompt": f"a red circle {i}", "seed": i} for i in range(4)]


def test_engine_splits_a_batch_that_runs_out_of_memory(models):
    """Injected OOM whenever more than one job steps together: every job still finishes, with
    exactly the picture of an undisturbed batched run (on the CPU batched == solo, bit for bit)."""
    clean, _ = _run_all(_engine(models), JOBS)
    engine = _engine(models)
    real, parts = engine._optimise, []

    def tight(runs):
        parts.append(len(runs))
        if len(runs) > 1:
            raise _oom()
        return real(runs)

    engine._optimise = tight
    split, _ = _run_all(engine, JOBS)
    assert max(parts) == 4 and parts.count(1) >= 4 * 4  # tried whole, then job by job every step
    for prompt, outcome in clean.items():
        assert split[prompt].blobs["png"] == outcome.blobs["png"]


def test_engine_fails_only_the_job_that_never_fits(models):
    engine = _engine(models)
    real = engine._optimise

    def step(runs):
        if any(r.prompt_text.endswith(" 2") for r in runs):
            raise _oom()
        return real(runs)

    engine._optimise = step
    results, _ = _run_all(engine, JOBS)
    assert isinstance(results["a red circle 2"], TooBigForMemory)
    assert all(results[f"a red circle {i}"].data["steps"] == 4 for i in (0, 1, 3))


def test_engine_admits_no_more_than_fits_and_refuses_sizes_that_never_fit(models):
    engine = _engine(models)
    engine.memory = MemoryPlanner(1000, 1.0)
    engine.memory.record(2, 32 * 32, 450)  # two jobs of 32x32 fit in 1000 bytes, three do not
    results, most = _run_all(engine, JOBS)
    assert most == 2 and all(r.data["steps"] == 4 for r in results.values())
    engine.memory.out_of_memory(1, 64 * 64)  # a 64x64 job did not fit alone
    with pytest.raises(JobError, match="64x64 does not fit in this worker's GPU memory"):
        engine.add({"prompt": "a big one", "width": 64, "height": 64}, RecordingContext())
    assert engine.active == 0


def test_autocast_decode_returns_float32_close_to_full_precision(models):
    _, vq = models
    z = vq.random_latent(6, 5, torch.Generator().manual_seed(0)).requires_grad_(True)
    full = vq.decode(vq.quantize(z))
    vq.autocast_dtype = torch.bfloat16
    try:
        half = vq.decode(vq.quantize(z))
        half.sum().backward()
    finally:
        vq.autocast_dtype = None
    assert half.dtype == torch.float32 and z.grad is not None and z.grad.dtype == torch.float32
    assert not torch.equal(half, full)  # it really ran in bfloat16 ...
    assert torch.allclose(half, full, atol=0.05)  # ... to within bfloat16's rounding


def test_gpu_wiring_sets_precision_kernels_and_the_memory_cap(monkeypatch):
    """handlers.use_gpu_speedups with torch.cuda's calls recorded (no GPU here)."""
    from types import SimpleNamespace

    from worker.imagine.handlers import use_gpu_speedups

    calls = {}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device=None: calls.setdefault("cap", (fraction, device)))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=80 * 2**30))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    engine = SimpleNamespace(vqgan=SimpleNamespace(device=torch.device("cuda", 0), autocast_dtype=None), memory=None)
    use_gpu_speedups(engine, 0.5)
    assert torch.backends.cudnn.benchmark is True
    assert engine.vqgan.autocast_dtype == torch.bfloat16
    assert calls["cap"] == (0.5, torch.device("cuda", 0))
    assert isinstance(engine.memory, MemoryPlanner) and engine.memory.limit == 40 * 2**30
