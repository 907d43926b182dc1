"""`python -m worker [classify|find|imagine|models] ...`: the local command line and the queue worker.

The subcommand bodies live with their engines (`worker.clip.cli`, `worker.imagine.cli`): each
module gives `add_<name>_arguments(parser)` and `<name>_main(args, runner) -> int | None`.
Only the chosen subcommand's module is imported, so one missing engine never breaks another.
With `--redis URL` the job goes through the queue to the workers behind that Redis; without it,
it runs in this process. No subcommand: run the queue worker.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys

from jobs.settings import SettingsError, load_settings

# name -> (module, add-arguments function, main function, help)
SUBCOMMANDS = {
    "classify": ("worker.clip.cli", "add_classify_arguments", "classify_main",
                 "zero-shot classify images against comma-separated labels"),
    "find": ("worker.clip.cli", "add_find_arguments", "find_main",
             "find the images in a folder that best match a text query"),
    "imagine": ("worker.imagine.cli", "add_imagine_arguments", "imagine_main",
                "generate an image from a prompt with VQGAN+CLIP"),
    "doctor": ("worker.doctor", "add_doctor_arguments", "doctor_main",
               "check Redis, the workers online, the GPU and the models, with fixes; exit 1 if broken"),
    "models": ("worker.models.cli", "add_models_arguments", "models_main",
               "list and fetch real pretrained models (CLIP, VQGAN)"),
}
# Subcommands that run no job: their main gets the Settings instead of a Runner.
NO_RUNNER = {"models", "doctor"}


def _common(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--json", action="store_true", default=d(False),
                   help="print machine-readable JSON on stdout and nothing else")
    p.add_argument("--redis", metavar="URL", default=d(None),
                   help="run through the queue on this Redis (default for the worker: REDIS_URL, else embedded)")
    p.add_argument("--clip-model", metavar="PATH_OR_HUB_ID", default=d(None), help="CLIP model (env CLIP_MODEL)")
    p.add_argument("--vqgan-config", metavar="YAML", default=d(None), help="VQGAN config (env VQGAN_CONFIG)")
    p.add_argument("--vqgan-checkpoint", metavar="CKPT", default=d(None), help="VQGAN checkpoint (env VQGAN_CHECKPOINT)")
    p.add_argument("-v", "--verbose", action="store_true", default=d(False), help="debug logging on stderr")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="clipbot worker: run CLIP and VQGAN+CLIP jobs locally, or (no subcommand) serve the Redis queue.",
    )
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="{classify,find,imagine,doctor,models}")
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (mod_name, add_fn, main_fn, help_) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        _common(sp, suppress=True)
        if name != chosen:
            continue
        mod = importlib.import_module(mod_name)  # only the chosen one: `find` need not load the imagine engine
        getattr(mod, add_fn)(sp)
        sp.set_defaults(_main=getattr(mod, main_fn))
    return parser


class ProgressBar:
    """A progress bar on stderr (tqdm) fed from job events."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def __call__(self, ev) -> None:
        from tqdm import tqdm

        if ev.type == "queued" and ev.position:
            print(f"{self.label}: queued, {ev.position} job(s) ahead", file=sys.stderr)
        elif ev.type == "started" and getattr(ev, "attempt", 1) > 1:
            print(f"{self.label}: retrying on {ev.worker} (attempt {ev.attempt})", file=sys.stderr)
            if self.bar is not None:  # the retry starts over: so does its bar and its rate
                self.bar.close()
                self.bar = None
        elif ev.type == "progress":
            if self.bar is None:
                # the bar starts with the work: the steps already done count as its start, not as
                # done in the instant between creating it and drawing it (a rate of millions/s)
                self.bar = tqdm(total=ev.total, initial=ev.step, desc=self.label, file=sys.stderr, unit="step",
                                leave=False)
            self.bar.total = ev.total
            self.bar.update(ev.step - self.bar.n)
            if ev.loss is not None:
                self.bar.set_postfix(loss=f"{ev.loss:.4f}", refresh=False)
            self.bar.refresh()
        elif ev.type in ("result", "failed", "cancelled") and self.bar is not None:
            self.bar.close()
            self.bar = None


class _WithProgress:
    """Wraps a Runner so every run draws a progress bar (the engines' CLIs need not)."""

    def __init__(self, runner, label: str):
        self.runner = runner
        self.label = label

    def put_blob(self, data: bytes) -> str:
        return self.runner.put_blob(data)

    def run(self, job, on_event=None):
        bar = ProgressBar(self.label)

        def both(ev):
            bar(ev)
            if on_event is not None:
                on_event(ev)

        try:
            return self.runner.run(job, both)
        finally:
            if bar.bar is not None:
                bar.bar.close()

    def __getattr__(self, name):
        return getattr(self.runner, name)


def _settings(args):
    overrides = {k: v for k, v in {
        "clip_model": args.clip_model, "vqgan_config": args.vqgan_config,
        "vqgan_checkpoint": args.vqgan_checkpoint,
        "vqgan_allow_pickle": getattr(args, "vqgan_allow_pickle", None) or None,  # imagine's flag
    }.items() if v is not None}
    return load_settings(**overrides)


def make_runner(args, settings):
    from worker.runner import LocalRunner, RedisRunner
    from worker.setup import load_setup

    if args.redis:
        if args.clip_model or args.vqgan_config or args.vqgan_checkpoint:
            print("warning: model options are ignored with --redis: the workers use their own models",
                  file=sys.stderr)
        runner = RedisRunner(args.redis, settings)
    else:
        runner = LocalRunner(lambda: load_setup(settings.handlers, settings))
    return runner if args.json else _WithProgress(runner, args.command)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from worker.api import JobCancelled, JobError
    from worker.models.store import ModelError

    try:
        settings = _settings(args)
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command is None:
        return run_queue_worker(args, settings)
    if args.command in NO_RUNNER:
        return int(args._main(args, settings) or 0)
    try:
        rc = args._main(args, make_runner(args, settings))
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (JobCancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return 130
    except ModelError as e:  # a catalogue model not fetched or damaged: the message says what to run
        print(f"error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


def run_queue_worker(args, settings) -> int:
    from jobs.embedded import resolve_redis_url
    from jobs.queue import queue_from_url
    from worker.loop import worker_from_settings
    from worker.setup import load_setup

    if args.redis:
        settings = settings.model_copy(update={"redis_url": args.redis})
    log = logging.getLogger("worker")
    url, owned = resolve_redis_url(settings)
    settings = settings.model_copy(update={"redis_url": url})  # engines that use Redis join the same one
    try:
        setup = load_setup(settings.handlers, settings)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        if owned is not None:
            owned.stop()
        return 2
    except BaseException:
        if owned is not None:
            owned.stop()
        raise

    async def serve() -> None:
        queue = queue_from_url(url, settings)
        worker = worker_from_settings(queue, setup, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        log.info("worker %s serving %s on %s (lanes: %s)", worker.id, ", ".join(sorted(setup.handlers)) or "imagine",
                 url, ", ".join(setup.lanes()))
        watchdog = None
        if settings.parent_pid:  # a bot's local worker: never outlive the bot
            from jobs.processes import watch_parent

            watchdog = asyncio.create_task(watch_parent(
                settings.parent_pid, lambda: worker.stopping.is_set() or worker.request_stop(),
                give_up_s=settings.shutdown_grace_s + 5))
        try:
            await worker.run()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await queue.redis.aclose()

    try:
        asyncio.run(serve())
    finally:
        if setup.close is not None:
            setup.close()
        if owned is not None:
            owned.stop()
    return 0
