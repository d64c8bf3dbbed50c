"""`lmops serve`: OpenAI-compatible serving of the registry's champion, with production logs.

`serve()` runs the server in the foreground; `running_server()` runs one on a background thread
(tests, benchmarks, the end-to-end scenario) and yields its base URL.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmops.params import ServeParams


def build(sp: ServeParams, root: Path = Path("."), prompt_hook=None, device: str = "auto"):
    """(FastAPI app, Server) for `sp` on `device` (the `device` param: auto = CUDA when present); the
    heavy imports happen here, not at `import lmops.serve`."""
    from lmops.serve.app import Server
    from lmops.serve.routes import create_app

    server = Server(sp, Path(root), prompt_hook, device)
    return create_app(server), server


def serve(sp: ServeParams, root: Path = Path("."), device: str = "auto") -> None:
    import uvicorn

    app, server = build(sp, root, device=device)
    try:
        uvicorn.run(app, host=sp.host, port=sp.port, log_level="info", access_log=False)
    finally:
        server.close()


@contextmanager
def running_server(sp: ServeParams, root: Path = Path("."), prompt_hook=None,
                   startup_timeout: float = 60.0, device: str = "auto") -> Iterator[tuple[str, object]]:
    """Serve on a background thread (port 0 = a free one); yield (base URL, Server)."""
    import uvicorn

    app, server = build(sp, root, prompt_hook, device)
    config = uvicorn.Config(app, host=sp.host, port=sp.port, log_level="warning", access_log=False)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, name="lmops-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.close()
            raise RuntimeError(f"the server did not start on {sp.host}:{sp.port}")
        time.sleep(0.02)
    port = uv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{sp.host}:{port}", server
    finally:
        uv.should_exit = True
        thread.join(10)
        server.close()
