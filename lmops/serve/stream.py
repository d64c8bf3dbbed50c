"""Token-by-token streaming (`"stream": true`): from the generation worker to the HTTP response.

`RowStreamer` is handed to `model.generate(streamer=...)` for a batch that holds streamed jobs: after
each decoding step it decodes every streamed row's tokens so far and pushes the text that is final
(`settled_text`) into that job's `StreamSink`. The sink carries it, thread-safe, to the request's
event loop, where the route sends it as OpenAI server-sent events. The whole `Result` still comes
through the job's future, so a streamed request is logged like any other, once, when it ends.

Text sent is never taken back: a sink only forwards text that extends what it forwarded before,
and a row holds back a tail that could still become a stop string, or a character whose bytes are
not all generated yet.
"""
from __future__ import annotations

import asyncio

END = object()  # the sink's last item: the job's future is settled


def settled_text(text: str, stops: list[str]) -> tuple[str, bool]:
    """(the part of `text` that is final, whether a stop string ended it): cut at the first stop
    string; else without a tail that is the start of a stop string or an incomplete character."""
    cut = min((text.index(s) for s in stops if s and s in text), default=None)
    if cut is not None:
        return text[:cut], True
    keep = len(text)
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                keep = min(keep, len(text) - n)
                break
    text = text[:keep]
    return text.rstrip("\ufffd"), False  # U+FFFD: a multi-byte character's bytes are not all there yet


class StreamSink:
    """One streamed request's text, from the worker thread to the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sent = ""  # what was forwarded (worker side)
        self.version: str | None = None  # the model version that generates it (set by the streamer)

    def push(self, text: str) -> None:
        """The answer so far (worker thread): forward what it adds to the text already forwarded."""
        if len(text) > len(self.sent) and text.startswith(self.sent):
            delta, self.sent = text[len(self.sent):], text
            self.loop.call_soon_threadsafe(self.queue.put_nowait, delta)

    def attach(self, future) -> None:
        """END follows the last piece once `future` (the job's) is settled, however it ends."""
        future.add_done_callback(lambda _f: self.loop.call_soon_threadsafe(self.queue.put_nowait, END))

    async def next(self, timeout: float):
        """The next piece of text, or END; TimeoutError after `timeout` seconds."""
        return await asyncio.wait_for(self.queue.get(), max(0.0, timeout))


class RowStreamer:
    """A transformers streamer for a batch (`put` gets the prompt ids, then each step's (B,) tokens):
    pushes each streamed row's settled text, up to its EOS, its own max_tokens or a stop string."""

    def __init__(self, tokenizer, jobs: list, version: str):
        self.tok, self.jobs = tokenizer, jobs
        self.ids: list[list[int]] = [[] for _ in jobs]
        self.done = [getattr(j, "sink", None) is None for j in jobs]
        self.prompt_seen = False
        for job in jobs:
            if getattr(job, "sink", None) is not None:
                job.sink.version = version

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()
        for i, job in enumerate(self.jobs):
            if self.done[i]:
                continue
            token = tokens[i]
            if token == self.tok.eos_token_id:
                self.done[i] = True
                continue
            self.ids[i].append(token)
            if len(self.ids[i]) >= job.max_tokens:
                self.done[i] = True
            text, stopped = settled_text(self.tok.decode(self.ids[i], skip_special_tokens=True), job.stop)
            job.sink.push(text)
            self.done[i] = self.done[i] or stopped

    def end(self) -> None:
        pass
