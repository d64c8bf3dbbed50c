"""The OpenAI wire format (the subset lmops serves) and its error shape."""
from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmops.data.generate import qa_text

# Limits on the fields that are not the prompt (the prompt's: serve.max_prompt_chars, a 413).
MAX_ID_CHARS = 1024  # `model`, `user`
MAX_STOPS, MAX_STOP_CHARS = 4, 256  # as OpenAI: up to 4 stop sequences


def checked_text(value: str, limit: int | None = None) -> str:
    """`value` if it can be served and logged, else a ValueError saying why (pydantic turns it into a
    400 naming the field): a lone UTF-16 surrogate (valid in JSON, not encodable as UTF-8) or a NUL
    character is refused before it reaches the tokenizer or the log; other control characters are
    served as sent."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = value[err.start]
        raise ValueError(f"the text cannot be encoded as UTF-8: U+{ord(bad):04X} at position {err.start} is a "
                         f"lone UTF-16 surrogate (send valid Unicode)") from None
    if "\x00" in value:
        raise ValueError(f"the text contains a NUL character (U+0000) at position {value.index(chr(0))}")
    if limit is not None and len(value) > limit:
        raise ValueError(f"the text is {len(value)} characters; the limit is {limit}")
    return value


class _Request(BaseModel):
    # OpenAI clients send many optional knobs (top_p, presence_penalty, ...): ignore what we don't use.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)  # one choice per request
    stream: bool = False  # server-sent events, as OpenAI clients expect them
    user: str | None = None

    @field_validator("model", "user")
    @classmethod
    def _identifier(cls, v: str | None) -> str | None:
        return None if v is None else checked_text(v, MAX_ID_CHARS)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"{len(stops)} stop sequences; the limit is {MAX_STOPS}")
        for s in stops:
            checked_text(s, MAX_STOP_CHARS)
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Request):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("send exactly one prompt per request (a list of one string is accepted)")
            v = v[0]
        checked_text(v)
        if not v.strip():
            raise ValueError("prompt is empty")
        return v


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _content(cls, v: str) -> str:
        return checked_text(v)


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, v: list[Message]) -> list[Message]:
        if v[-1].role != "user" or not v[-1].content.strip():
            raise ValueError("the last message must be a non-empty user message")
        return v


def chat_prompt(messages: list[Message]) -> str:
    """Chat turns in the corpus' question/answer format: system text is context, each user turn a
    question, each assistant turn the answer to the question before it."""
    parts = [m.content for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    for i, m in enumerate(turns):
        if m.role == "user":
            answer = turns[i + 1].content if i + 1 < len(turns) and turns[i + 1].role == "assistant" else None
            parts.append(qa_text(m.content, answer).rstrip("\n") if answer is not None else qa_text(m.content))
    return "".join(parts)


def templated_chat(tokenizer, messages: list[Message]) -> str | None:
    """The conversation through the model's own chat template (assistant turn opened), or None when the
    model has none: an instruct model answers the bare QA format with nothing."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    return tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                         add_generation_prompt=True, tokenize=False)


def stream_chunk(request_id: str, model: str, version: str, piece: str | None, finish: str | None, chat: bool,
                 first: bool = False) -> dict:
    """One OpenAI streaming chunk: a piece of the answer (`finish` None), or the last chunk, an empty
    delta with the finish reason. A chat stream's first chunk also carries the assistant role.
    (`data: [DONE]` follows the last one on the wire.)"""
    if chat:
        delta = ({"role": "assistant"} if first else {}) | ({"content": piece} if piece is not None else {})
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": piece or "", "finish_reason": finish, "logprobs": None}
    return {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "system_fingerprint": version, "choices": [choice]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(request_id: str, model: str, version: str, text: str, finish: str, usage_: dict) -> dict:
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": version,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}], "usage": usage_}


def chat_body(request_id: str, model: str, version: str, text: str, finish: str, usage_: dict) -> dict:
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": version,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": usage_}


def encodable(text: str) -> str:
    """`text` with anything UTF-8 cannot encode (lone surrogates) backslash-escaped: safe to send and log."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(message: str, code: str, param: str | None = None) -> dict:
    kind = "server_error" if code == "server_error" else "invalid_request_error"
    return {"error": {"message": encodable(message), "type": kind, "param": param and encodable(param), "code": code}}
