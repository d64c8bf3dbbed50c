"""The FastAPI app around a `Server`: routes, OpenAI-shaped errors, and logging of every request."""
from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmops.io import InputError
from lmops.serve.app import ApiError, Server, new_request_id
from lmops.serve.protocol import (
    ChatRequest,
    CompletionRequest,
    chat_body,
    chat_prompt,
    completion_body,
    error_body,
    stream_chunk,
    templated_chat,
    usage,
)
from lmops.serve.stream import END, StreamSink

GENERATE = ("/v1/completions", "/v1/chat/completions")
MAX_BODY_BYTES = 1 << 20  # a request body larger than this is a 413 before it is parsed


def _validation_message(err: RequestValidationError, body: bytes) -> tuple[str, str | None]:
    errors = err.errors()
    try:
        data = json.loads(body)
    except ValueError as bad:
        return f"the request body is not valid JSON ({bad})", None
    except RecursionError:
        return "the request body is nested too deeply", None
    if not isinstance(data, dict):
        return f"the request body must be a JSON object, got {type(data).__name__}", None
    parts, param = [], None
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        param = param or (loc[0] if loc else None)
        parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg')}")
    return "invalid request: " + "; ".join(parts), param


def _raw_prompt(body: bytes) -> str:
    """Best effort, for logging a rejected request: the prompt or last message it carried."""
    try:
        data = json.loads(body or b"{}")
        prompt = data.get("prompt") or (data.get("messages") or [{}])[-1].get("content", "")
        return prompt if isinstance(prompt, str) else json.dumps(prompt)
    except Exception:
        return body[:2000].decode("utf-8", "replace")


def create_app(server: Server) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # Flush the log here: after a SIGTERM uvicorn re-raises the signal once it stops serving,
        # which kills the process before any code after `uvicorn.run()` could run.
        await asyncio.to_thread(server.close)

    app = FastAPI(title="lmops", description="OpenAI-compatible server of the lmops champion model",
                  lifespan=lifespan)
    app.state.server = server

    async def fail(request: Request, status: int, message: str, code: str, param: str | None = None):
        """The OpenAI error shape; a failed generation request is logged like any other."""
        if request.url.path in GENERATE:
            server.log_request(request_id=new_request_id("err"), endpoint=request.url.path,
                               arrived=getattr(request.state, "arrived", time.monotonic()), status=status,
                               prompt=_raw_prompt(await request.body()), error=message)
        return JSONResponse(error_body(message, code, param), status_code=status)

    @app.middleware("http")
    async def _arrival(request: Request, call_next):
        request.state.arrived = time.monotonic()
        size = request.headers.get("content-length", "0")
        if not size.isdigit() or int(size) > MAX_BODY_BYTES:
            if request.url.path in GENERATE:
                server.log_request(request_id=new_request_id("err"), endpoint=request.url.path,
                                   arrived=request.state.arrived, status=413, error="request body too large")
            return JSONResponse(error_body(f"the request body is {size} bytes; the limit is {MAX_BODY_BYTES}",
                                           "request_too_large"), status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        message, param = _validation_message(err, await request.body())
        return await fail(request, 400, message, "invalid_request", param)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return await fail(request, err.status, err.message, err.code, err.param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return await fail(request, err.status_code, str(err.detail), "not_found" if err.status_code == 404 else "http")

    async def generate(request: Request, req, endpoint: str, raw: str, rendered: str, default_stop: list[str]):
        arrived = request.state.arrived
        request_id = new_request_id("cmpl" if endpoint == GENERATE[0] else "chatcmpl")
        if req.stream:
            return await stream(req, endpoint, raw, rendered, default_stop, arrived, request_id)
        try:
            result, prompt_version, text = await server.complete(rendered, req, default_stop)
        except ApiError as err:
            server.log_request(request_id=request_id, endpoint=endpoint, arrived=arrived, status=err.status,
                               prompt=raw, rendered=rendered, error=err.message, user=req.user)
            return JSONResponse(error_body(err.message, err.code, err.param), status_code=err.status)
        server.log_request(request_id=request_id, endpoint=endpoint, arrived=arrived, status=200, prompt=raw,
                           rendered=text, result=result, prompt_version=prompt_version, user=req.user)
        build = completion_body if endpoint == GENERATE[0] else chat_body
        return build(request_id, server.sp.model, result.model_version, result.text, result.finish_reason,
                     usage(result.prompt_tokens, result.completion_tokens))

    async def stream(req, endpoint: str, raw: str, rendered: str, default_stop: list[str], arrived: float,
                     request_id: str):
        """`"stream": true`: OpenAI server-sent events (`data: {chunk}`, then `data: [DONE]`), each
        chunk sent as soon as the worker generated its tokens. A request that fails before its first
        token is an error response like any other; a failure after it is an `error` event. The request
        is logged once, when the stream ends, like any other (a client that hangs up early: 499)."""
        chat = endpoint == GENERATE[1]
        deadline = time.monotonic() + server.sp.request_timeout
        sink = StreamSink(asyncio.get_running_loop())

        def log(status: int, result=None, error: str | None = None, prompt_version: str = "none", text: str = ""):
            server.log_request(request_id=request_id, endpoint=endpoint, arrived=arrived, status=status, prompt=raw,
                               rendered=text or rendered, result=result, prompt_version=prompt_version,
                               error=error, user=req.user)

        try:  # up to the first piece of text, errors are plain error responses
            future, prompt_version, text = server.start(rendered, req, default_stop, sink)
            try:
                first = await sink.next(deadline - time.monotonic())
            except TimeoutError:
                first = END  # finish() reports the timeout
            if first is END:  # no text: a failure is still an error response
                await server.finish(future, deadline - time.monotonic())
        except ApiError as err:
            log(err.status, error=err.message, text=rendered)
            return JSONResponse(error_body(err.message, err.code, err.param), status_code=err.status)

        async def events():
            status, result, error, sent = 499, None, "the client closed the stream before its end", ""

            def sse(piece: str | None, finish: str | None = None, version: str | None = None) -> str:
                chunk = stream_chunk(request_id, server.sp.model, version or sink.version or server.loaded.version,
                                     piece, finish, chat, first=not sent and finish is None)
                return f"data: {json.dumps(chunk)}\n\n"

            try:
                item = first
                while item is not END:
                    yield sse(item)
                    sent += item
                    item = await sink.next(deadline - time.monotonic())
                result = await server.finish(future, deadline - time.monotonic())
                rest = result.text[len(sent):] if result.text.startswith(sent) else ""
                if rest or not sent:
                    yield sse(rest, version=result.model_version)
                    sent += rest
                yield sse(None if chat else "", result.finish_reason, result.model_version)
                status, error = 200, None
            except (ApiError, TimeoutError) as err:
                if isinstance(err, TimeoutError):
                    future.cancel()
                    err = ApiError(503, f"generation did not finish within {server.sp.request_timeout} s; "
                                        "retry later", "timeout")
                status, error, result = err.status, err.message, None
                yield f"data: {json.dumps(error_body(err.message, err.code, err.param))}\n\n"
            finally:  # once, however the stream ends (a client that hangs up: 499)
                if status == 499:
                    future.cancel()
                log(status, result, error, prompt_version, text)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest):
        return await generate(request, req, GENERATE[0], req.prompt, req.prompt, [])

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, req: ChatRequest):
        # A model with a chat template gets the conversation through it and ends its answer at EOS / the
        # template's end of turn; the embedded model (no template) answers one line in the QA format.
        templated = templated_chat(server.loaded.tokenizer, req.messages)
        if templated is not None:
            return await generate(request, req, GENERATE[1], req.messages[-1].content, templated, [])
        return await generate(request, req, GENERATE[1], req.messages[-1].content, chat_prompt(req.messages),
                              ["\n"])

    @app.get("/v1/models")
    async def models():
        loaded = server.loaded
        return {"object": "list", "data": [{"id": server.sp.model, "object": "model", "created": int(server.started),
                                            "owned_by": "lmops", "version": loaded.version,
                                            "alias": server.sp.alias, "context_length": loaded.context}]}

    @app.get("/health")
    async def health():
        """200 "ok" while the generation worker runs (a dead one is restarted here first) and is not
        stuck on one batch for longer than the request timeout; else 503 "unhealthy"."""
        loaded = server.loaded
        worker = server.engine.health()
        stuck = worker["busy_s"] is not None and worker["busy_s"] > server.sp.request_timeout
        ok = worker["alive"] and not stuck
        body = {"status": "ok" if ok else "unhealthy", "model": server.sp.model, "version": loaded.version,
                "path": str(loaded.path), "queue": worker["queue"], "worker": worker,
                "log_backlog": server.logs.backlog, "log_quarantined": server.logs.quarantined,
                "uptime_s": round(time.time() - server.started, 1)}
        if not ok:
            body["reason"] = "the generation worker is not running" if not worker["alive"] else \
                f"the generation worker has been on one batch for {worker['busy_s']} s"
            return JSONResponse(body, status_code=503)
        return body

    @app.get("/metrics")
    async def metrics():
        body, content_type = server.metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/admin/reload")
    def reload():  # sync: loading a model blocks, so it runs in the thread pool, not the event loop
        try:
            return server.reload()
        except InputError as err:  # still serving the old model
            return JSONResponse(error_body(f"reload failed, still serving {server.loaded.version}: {err}",
                                           "reload_failed"), status_code=409)

    return app
