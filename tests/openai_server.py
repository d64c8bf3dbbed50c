"""A minimal OpenAI-compatible `/v1/completions` server for tests: FastAPI + uvicorn on 127.0.0.1,
on a free port picked by the OS, serving a local Hugging Face model (greedy; echo + logprobs)."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


def build_app(model, tokenizer, name: str):
    import torch
    from fastapi import FastAPI

    from lmops.model.evaluate import generate_answers

    app = FastAPI()

    def echo_logprobs(text: str) -> dict:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        tokens = [tokenizer.decode(ids[:i + 1]) for i in range(len(ids))]
        offsets = [len(tokens[i - 1]) if i else 0 for i in range(len(ids))]
        lps = [None] + [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
        return {"tokens": [tokenizer.decode([t]) for t in ids], "token_logprobs": lps, "text_offset": offsets}

    @app.post("/v1/completions")
    def completions(body: dict) -> dict:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = []
        for i, prompt in enumerate(prompts):
            if body.get("echo") and body.get("max_tokens", 16) == 0:
                choices.append({"index": i, "text": prompt, "logprobs": echo_logprobs(prompt), "finish_reason": "length"})
            else:
                text = generate_answers(model, tokenizer, [prompt], body.get("max_tokens", 16))[0]
                choices.append({"index": i, "text": " " + text, "logprobs": None, "finish_reason": "stop"})
        return {"id": "cmpl-test", "object": "text_completion", "model": name, "choices": choices}

    return app


@contextmanager
def serve(model, tokenizer, name: str = "tiny"):
    """Yield the base URL of a live server; shut it down afterwards."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(model, tokenizer, name), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
