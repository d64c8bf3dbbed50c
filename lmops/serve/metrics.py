"""Prometheus metrics of one server, in its own CollectorRegistry (several servers in one
process, as in tests, must not collide in the global one)."""
from __future__ import annotations


class ServeMetrics:
    def __init__(self, server):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("lmops_requests", "Requests by endpoint and HTTP status", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("lmops_request_latency_seconds", "Arrival-to-response latency", ["endpoint"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.prompt_tokens = Counter("lmops_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter("lmops_completion_tokens", "Tokens generated", registry=r)
        self.reloads = Counter("lmops_model_reloads", "Hot reloads of a new model version", registry=r)
        # Labels refreshed at scrape time in render(): a hot reload changes the version.
        info = Gauge("lmops_model_info", "1 for the model version being served", ["model", "version"], registry=r)
        self._info, self._server = info, server
        Gauge("lmops_queue_depth", "Requests waiting for the generation worker", registry=r).set_function(
            lambda: server.engine.jobs.qsize())
        Gauge("lmops_log_backlog", "Log rows accepted but not yet on disk", registry=r).set_function(
            lambda: server.logs.backlog)
        Gauge("lmops_log_rows_written", "Log rows written to the production log store", registry=r).set_function(
            lambda: server.logs.written)
        Gauge("lmops_log_rows_quarantined", "Log rows that could not be written, moved to quarantine/",
              registry=r).set_function(lambda: server.logs.quarantined)
        Gauge("lmops_log_rows_dropped", "Log rows dropped because the journal could not be written", registry=r).set_function(
            lambda: server.logs.dropped)

    def observe(self, endpoint: str, status: int, seconds: float, result) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if result is not None:
            self.prompt_tokens.inc(result.prompt_tokens)
            self.completion_tokens.inc(result.completion_tokens)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        loaded = self._server.loaded
        self._info.clear()
        self._info.labels(loaded.name, loaded.version).set(1)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
