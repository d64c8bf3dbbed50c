"""Language-model backends behind one interface: `generate` (greedy or sampled continuation, cut at
the first newline) and `loglik` (log-probability of a continuation). The local Hugging Face model is
the default; `openai` talks to any OpenAI-compatible `/v1/completions` endpoint (vLLM, Ollama,
llama.cpp's server, `lmops serve`)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

from lmops.io import InputError
from lmops.model.generate import first_line, generate_rows

URL_ENV, MODEL_ENV, KEY_ENV = "LMOPS_OPENAI_URL", "LMOPS_OPENAI_MODEL", "LMOPS_OPENAI_API_KEY"


class BackendError(InputError):
    """The language-model backend could not answer (e.g. an unreachable endpoint)."""


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[str], max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0) -> list[str]: ...

    def loglik(self, prompts: list[str], continuations: list[str]) -> list[float]: ...


class HFBackend:
    """A local causal LM. Prompts longer than the model's context keep their right end (the question)."""
    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 16):
        from lmops.model.generate import has_chat_template

        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.context = int(getattr(model.config, "max_position_embeddings", 2048))
        # an instruct model: asked in turns (harness.as_asked), and the loop's proposer talks to it in turns
        self.chat = has_chat_template(tokenizer)

    def chat_turn(self, content: str, lead: str = "") -> str:
        """`content` as one user turn of the model's chat template, the assistant's turn opened (with
        `lead`, which the model continues)."""
        from lmops.model.generate import chat_prompt

        return chat_prompt(self.tokenizer, content, lead)

    def _ids(self, text: str, reserve: int) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-(self.context - reserve):]

    def generate(self, prompts, max_new_tokens, temperature=0.0, seed=0):
        import torch

        torch.manual_seed(seed)
        rows = [self._ids(p, max_new_tokens) for p in prompts]
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {}
        # Answers end at a newline: stopping there saves most of the decoding steps.
        return generate_rows(self.model, self.tokenizer, rows, max_new_tokens, self.batch_size,
                             stop_strings=["\n"], **sampling)

    def loglik(self, prompts, continuations):
        import torch

        scores = []
        for prompt, cont in zip(prompts, continuations):
            cont_ids = self.tokenizer(cont, add_special_tokens=False)["input_ids"]
            ids = self._ids(prompt, len(cont_ids)) + cont_ids
            with torch.no_grad():
                logits = self.model(input_ids=torch.tensor([ids])).logits[0, :-1]  # (T-1, V)
            logp = torch.log_softmax(logits.float(), -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
            scores.append(float(logp[-len(cont_ids):].sum()))
        return scores


class OpenAIBackend:
    """Any OpenAI-compatible completions endpoint. Transient failures (refused connection, timeout,
    5xx) are retried `retries` times with backoff; then a BackendError names the URL."""
    name = "openai"

    def __init__(self, url: str, model: str, retries: int = 3, timeout: float = 30.0, backoff: float = 0.5,
                 api_key: str | None = None):
        self.url = url.rstrip("/")
        self.model, self.retries, self.timeout, self.backoff = model, retries, timeout, backoff
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _post(self, body: dict) -> dict:
        import httpx

        endpoint, last = f"{self.url}/v1/completions", ""
        for attempt in range(1, self.retries + 1):
            try:
                resp = httpx.post(endpoint, json={"model": self.model, **body}, headers=self.headers,
                                  timeout=self.timeout)
                if resp.status_code < 500:
                    if resp.status_code >= 400:
                        raise BackendError(f"{endpoint} rejected the request ({resp.status_code}): {resp.text[:300]}")
                    return resp.json()
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except (httpx.TransportError, ValueError) as err:  # refused, timeout, bad JSON
                last = f"{type(err).__name__}: {err}"
            if attempt < self.retries:
                time.sleep(self.backoff * 2 ** (attempt - 1))
        raise BackendError(f"OpenAI-compatible endpoint {endpoint} is unreachable after {self.retries} attempts "
                           f"(last error: {last}); start the server or fix prompts.backend.url / ${URL_ENV}")

    def generate(self, prompts, max_new_tokens, temperature=0.0, seed=0):
        out = []
        for i, prompt in enumerate(prompts):  # one prompt per request: not every server takes a list
            data = self._post({"prompt": prompt, "max_tokens": max_new_tokens, "temperature": temperature,
                               "seed": seed + i, "stop": ["\n"]})
            out.append(first_line(data["choices"][0]["text"]))
        return out

    def loglik(self, prompts, continuations):
        """Sum of the continuation's token log-probs, via the standard `echo` + `logprobs` request."""
        scores = []
        for prompt, cont in zip(prompts, continuations):
            data = self._post({"prompt": prompt + cont, "max_tokens": 0, "echo": True, "logprobs": 0})
            lp = (data["choices"][0].get("logprobs") or {})
            offsets, tokens = lp.get("text_offset"), lp.get("token_logprobs")
            if not offsets or tokens is None:
                raise BackendError(f"{self.url} does not return echo logprobs; answer log-likelihood needs them")
            scores.append(sum(t for o, t in zip(offsets, tokens) if o >= len(prompt) and t is not None))
        return scores


def _hf(cfg, model_and_tokenizer) -> Backend:
    return HFBackend(*model_and_tokenizer, batch_size=cfg.batch_size)


def _openai(cfg, _model_and_tokenizer) -> Backend:
    url, model = cfg.url or os.environ.get(URL_ENV), cfg.model or os.environ.get(MODEL_ENV)
    if not url or not model:
        raise BackendError(f"the openai backend needs prompts.backend.url and .model (or ${URL_ENV} and ${MODEL_ENV})")
    return OpenAIBackend(url, model, retries=cfg.retries, timeout=cfg.timeout, api_key=os.environ.get(KEY_ENV))


BACKENDS: dict[str, Callable] = {"hf": _hf, "openai": _openai}


def make_backend(cfg, model_and_tokenizer=None) -> Backend:
    """The backend named by `cfg.type` (params `prompts.backend`)."""
    return BACKENDS[cfg.type](cfg, model_and_tokenizer)
