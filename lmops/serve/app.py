"""`lmops serve`: the OpenAI-compatible HTTP server of the registry's champion.

Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
GET /metrics (Prometheus text), POST /admin/reload (check the registry now).
Every request, failed ones included, becomes one row of the production log (`logstore.py`).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from lmops.errors import InputError, LmopsError
from lmops.params import ServeParams
from lmops.serve.engine import UNREGISTERED, Engine, Loaded, PromptTooLong, load, load_prompt_hook
from lmops.serve.logstore import LogWriter
from lmops.serve.metrics import ServeMetrics
from lmops.serve.protocol import encodable

log = logging.getLogger("lmops.serve")


class ApiError(LmopsError):
    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def champion_source(sp: ServeParams, root: Path) -> tuple[Path, str]:
    """(model directory, version) of the alias in the registry, else the fallback directory."""
    from lmops.registry import Registry

    try:
        found = Registry(root, sp.registry_store).resolve(sp.model, sp.alias)
    except InputError as err:  # no git repository: nothing registered yet
        log.debug("no model registry in %s (%s)", root, err)
        found = None
    if found is not None:
        return found.path, found.version
    fallback = root / sp.fallback_dir
    if not (fallback / "config.json").is_file():
        raise InputError(f"no {sp.alias} of {sp.model} in the registry and no fallback model at {fallback}: "
                         f"register and promote one (`lmops models promote`) or train models/base first")
    return fallback, UNREGISTERED


class Server:
    """Everything one server process holds: engine, log writer, metrics, and the reload poller."""

    def __init__(self, sp: ServeParams, root: Path = Path("."), prompt_hook=None, device: str = "auto"):
        from lmops.model.build import resolve_device

        self.sp, self.root, self.device = sp, Path(root), resolve_device(device)  # the `device` param
        path, version = champion_source(sp, self.root)
        self.engine = Engine(load(path, sp.model, version, self.device), sp.max_batch, sp.threads)
        self.logs = LogWriter(self.root / sp.log_dir, sp.log_flush_seconds, sp.log_batch_rows)
        self.prompt_hook = prompt_hook or load_prompt_hook(sp.prompt_hook, sp, self.root)
        self.metrics = ServeMetrics(self)
        self.started = time.time()
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = None
        if sp.reload_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="lmops-reload", daemon=True)
            self._poller.start()

    @property
    def loaded(self) -> Loaded:
        return self.engine.current

    def reload(self) -> dict:
        """Load the alias' current version if it changed; the swap never interrupts a request."""
        with self._reload_lock:  # a poll and an admin call never load the same model twice
            path, version = champion_source(self.sp, self.root)
            old = self.loaded.version
            if version == old and path == self.loaded.path:
                return {"reloaded": False, "version": version}
            self.engine.swap(load(path, self.sp.model, version, self.device))
            self.metrics.reloads.inc()
            return {"reloaded": True, "version": version, "previous": old}

    def _poll(self) -> None:
        while not self._stop.wait(self.sp.reload_seconds):
            try:
                self.reload()
            except Exception as err:  # a broken registry must not take the server down
                log.error("hot reload check failed (still serving %s): %s", self.loaded.version, err)

    def close(self) -> None:
        self._stop.set()
        self.engine.close()
        self.logs.close()

    # ---- one request --------------------------------------------------------------------------
    def check_model(self, requested: str | None) -> None:
        if requested not in (None, self.sp.model):
            raise ApiError(404, f"model {requested!r} does not exist; this server serves {self.sp.model!r} "
                                f"(see GET /v1/models)", "model_not_found", "model")

    async def complete(self, rendered: str, req, default_stop: list[str]) -> tuple:
        """Run one generation: (Result, prompt version, the text the model saw). The caller logs."""
        future, prompt_version, text = self.start(rendered, req, default_stop)
        return await self.finish(future, self.sp.request_timeout), prompt_version, text

    def start(self, rendered: str, req, default_stop: list[str], sink=None) -> tuple:
        """Check the request and queue its generation: (future, prompt version, the text the model
        sees); ApiError for a request that cannot be served. `sink`: stream the text there."""
        self.check_model(req.model)
        if len(rendered) > self.sp.max_prompt_chars:
            raise ApiError(413, f"the prompt is {len(rendered)} characters; the limit is {self.sp.max_prompt_chars}",
                           "prompt_too_large", "prompt")
        max_tokens = req.max_tokens or self.sp.default_max_tokens
        if max_tokens > self.sp.max_tokens_limit:
            raise ApiError(400, f"max_tokens is {max_tokens}; the limit is {self.sp.max_tokens_limit}",
                           "max_tokens_too_large", "max_tokens")
        try:
            text, prompt_version = self.prompt_hook(rendered)
        except Exception as err:  # a broken production prompt fails its request (logged), not the server
            raise ApiError(500, f"the production prompt hook failed: {type(err).__name__}: {err}",
                           "server_error") from None
        future = self.engine.submit(text, max_tokens, req.temperature, req.stops() or default_stop, sink=sink)
        return future, prompt_version, text

    async def finish(self, future, timeout: float):
        """The Result of a started generation, within `timeout` seconds; ApiError otherwise."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(0.0, timeout))
        except PromptTooLong as err:
            raise ApiError(400, str(err), "context_length_exceeded", "prompt") from None
        except TimeoutError:
            future.cancel()  # the worker skips it if it has not started
            raise ApiError(503, f"generation did not finish within {self.sp.request_timeout} s; retry later",
                           "timeout") from None
        except Exception as err:  # a generation bug: a 500 that is still logged like any request
            raise ApiError(500, f"generation failed: {type(err).__name__}: {err}", "server_error") from None

    def log_request(self, *, request_id: str, endpoint: str, arrived: float, status: int, prompt: str = "",
                    rendered: str = "", result=None, prompt_version: str = "none", error: str | None = None,
                    user: str | None = None) -> None:
        latency = (time.monotonic() - arrived) * 1000
        self.logs.log(_loggable({
            "request_id": request_id, "timestamp": datetime.now(UTC) - _ago(latency), "endpoint": endpoint,
            "status": status, "error": error, "model": self.sp.model,
            "model_version": result.model_version if result else self.loaded.version,
            "prompt_version": prompt_version, "prompt": prompt, "rendered_prompt": rendered,
            "response": result.text if result else "", "prompt_tokens": result.prompt_tokens if result else 0,
            "completion_tokens": result.completion_tokens if result else 0, "latency_ms": latency,
            "mean_logprob": result.mean_logprob if result else None, "user": user or ""}))
        self.metrics.observe(endpoint, status, latency / 1000, result)


def _loggable(row: dict) -> dict:
    """The row with every string made encodable (lone surrogates backslash-escaped): a rejected
    request's raw text is logged as evidence, and must not end up in the log store's quarantine."""
    return {k: encodable(v) if isinstance(v, str) else v for k, v in row.items()}


def _ago(ms: float):
    from datetime import timedelta

    return timedelta(milliseconds=ms)


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"
