"""A worker's Prometheus metrics: how long jobs waited and ran, imagine step times, failures.

Measured where the queue loop sees them (worker/loop.py calls these hooks); served on
`CLIPBOT_METRICS_PORT` when set. Each Worker has its own registry, so several in one process
(tests) never collide."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from jobs.claims import Claim
from jobs.metrics import LATENCY_BUCKETS, MetricsServer

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.wait = Histogram("clipbot_job_wait_seconds", "Submit to start of a job's first attempt (queue wait).",
                              ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.run = Histogram("clipbot_job_run_seconds", "Start to end of one attempt on this worker, by how it ended.",
                             ["kind", "outcome"], buckets=LATENCY_BUCKETS, registry=r)
        self.step = Histogram("clipbot_imagine_step_seconds", "One optimisation step of the imagine engine's batch.",
                              buckets=STEP_BUCKETS, registry=r)
        self.batch = Gauge("clipbot_imagine_batch_jobs", "Jobs in the imagine engine's batch now.", registry=r)
        self.failures = Counter("clipbot_job_failures_total", "Attempts that did not end in a Result: `failed` "
                                "(the job's error, final), `crashed` (unexpected, given back and retried), "
                                "`lost` (another worker took the job over).", ["kind", "reason"], registry=r)
        self.taken_over = Counter("clipbot_jobs_taken_over_total", "Jobs this worker started on a later attempt "
                                  "(reclaimed from a dead or silent worker).", ["kind"], registry=r)
        self._started: dict[str, float] = {}  # job id -> monotonic start of this attempt
        self._server: MetricsServer | None = None

    # ------------------------------------------------------------------ hooks

    def started(self, claim: Claim) -> None:
        self._started[claim.job.id] = time.monotonic()
        kind = claim.job.kind
        if claim.attempt == 1:
            self.wait.labels(kind).observe(max(0.0, time.time() - claim.job.created))
        else:
            self.taken_over.labels(kind).inc()

    def ended(self, claim: Claim, outcome: str) -> None:
        """outcome: result, failed, cancelled, released, crashed, lost."""
        t0 = self._started.pop(claim.job.id, None)
        kind = claim.job.kind
        if t0 is not None:
            self.run.labels(kind, outcome).observe(time.monotonic() - t0)
        if outcome in ("failed", "crashed", "lost"):
            self.failures.labels(kind, outcome).inc()

    def stepped(self, seconds: float, jobs: int) -> None:
        self.step.observe(seconds)
        self.batch.set(jobs)

    # ------------------------------------------------------------------ serving

    def serve(self, port: int) -> int:
        self._server = MetricsServer(self.registry, port)
        return self._server.port

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
