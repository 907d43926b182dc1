"""Serving a Prometheus registry over HTTP (`CLIPBOT_METRICS_PORT`). The bot and the worker each
build their own registry (bot/metrics.py, worker/metrics.py) and serve it on their own port."""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)

# seconds: from ~5 ms (a CLIP query) to ~30 min (a long generation behind a queue)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class MetricsServer:
    """`/metrics` for one registry, served by prometheus_client's threaded HTTP server."""

    def __init__(self, registry: CollectorRegistry, port: int, addr: str = "0.0.0.0"):
        self._httpd, self._thread = start_http_server(port, addr=addr, registry=registry)
        self.port = self._httpd.server_port
        log.info("metrics on http://%s:%d/metrics", addr, self.port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
