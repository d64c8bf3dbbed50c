"""The generation engine: one model at a time, requests batched on one worker thread, hot swaps.

On a CPU, two generations at once only fight over the same cores, so one worker thread takes
requests from a queue and generates up to `max_batch` of them together (left-padded, like
`lmops.model.generate.generate_texts`). The worker reads the current `Loaded` model once per
batch; a swap replaces that reference after the new model is fully loaded, so a request in flight
finishes on the model it started with and no request ever sees a half-loaded one. A streamed request's
job carries a sink: its text goes there after every decoding step (`lmops.serve.stream`), its Result
through the future like any other.

Each request's failure stays in that request: tokenizing, the length check and generation all run
inside the worker's `try`; a batch that fails is retried one job at a time, so one bad job does not
fail the others; a future its client stopped waiting for (a timeout) is skipped. Should the worker
thread still die, `ensure_alive()` (called by every `submit` and by GET /health) starts a new one,
and `health()` reports the worker's state.
"""
from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path

from lmops.errors import LmopsError

log = logging.getLogger("lmops.serve")

# Production prompt hook: raw prompt -> (text the model sees, prompt version).
PromptHook = Callable[[str], tuple[str, str]]
UNREGISTERED = "unregistered"


def identity_prompt(prompt: str) -> tuple[str, str]:
    return prompt, "none"


def load_prompt_hook(spec: str, sp=None, root: Path = Path(".")) -> PromptHook:
    """`""` -> prompts are used as sent; `"registry"` -> the prompt registry's production prompt
    (`lmops.serve.prompt`); `"package.module:function"` -> that function."""
    if not spec:
        return identity_prompt
    if spec == "registry":
        from lmops.params import ServeParams
        from lmops.serve.prompt import registry_hook

        return registry_hook(sp or ServeParams(), Path(root))
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        from lmops.io import InputError

        raise InputError(f"serve.prompt_hook {spec!r} cannot be loaded: {err}") from None


@dataclass
class Loaded:
    """A model ready to serve, with where it came from."""
    model: object
    tokenizer: object
    name: str
    version: str
    path: Path
    context: int  # the model's maximum positions: prompt + completion must fit


def _load_quantized(path: Path):
    """A variant written by the quantize stage (it carries quant.json): real low-bit weights."""
    try:
        from lmops.quant.artifact import load_variant
    except ImportError:
        from lmops.io import InputError

        raise InputError(f"{path} is a quantized variant (quant.json) but lmops.quant is not installed") from None
    model, tokenizer, _meta = load_variant(path)
    return model, tokenizer


def _load_hf(path: Path):
    from lmops.model.build import load_model

    return load_model(path)


def _load_engine_export(path: Path):
    """An export to another engine (`lmops.engines`, it carries engine.json): served by that engine."""
    from lmops.engines.serving import load_export

    return load_export(path)


# Marker file in a model directory -> its loader; a plain Hugging Face directory otherwise.
LOADERS: dict[str, Callable[[Path], tuple]] = {"quant.json": _load_quantized, "engine.json": _load_engine_export}


def load_weights(path: str | Path) -> tuple:
    """(model, tokenizer) of a model directory, by the loader its marker file names (LOADERS)."""
    path = Path(path)
    return next((fn for marker, fn in LOADERS.items() if (path / marker).is_file()), _load_hf)(path)


def load(path: str | Path, name: str, version: str, device: str = "cpu") -> Loaded:
    """The model of `path` on `device` (a resolved one: `lmops.model.build.resolve_device`)."""
    path = Path(path)
    model, tokenizer = load_weights(path)
    if device != "cpu":
        model = model.to(device)
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    return Loaded(model, tokenizer, name, version, Path(path), context)


@dataclass
class Job:
    prompt: str  # the rendered prompt
    max_tokens: int
    temperature: float
    stop: list[str] = field(default_factory=list)
    future: Future = field(default_factory=Future)
    sink: object | None = None  # a `lmops.serve.stream.StreamSink`: the text goes there as it is generated


class PromptTooLong(LmopsError, ValueError):
    """The prompt plus the requested completion does not fit the model's context."""


@dataclass
class Result:
    text: str
    prompt_tokens: int
    completion_tokens: int
    mean_logprob: float | None
    finish_reason: str
    model_version: str


class Engine:
    def __init__(self, loaded: Loaded, max_batch: int = 8, threads: int = 1):
        self.current = loaded
        self.max_batch = max_batch
        self.threads = threads
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.swaps = 0
        self.restarts = 0
        self.last_batch: float | None = None  # time.time() when the worker last finished a batch
        self.busy_since: float | None = None  # time.monotonic() when the running batch started
        self._stop = threading.Event()
        self._restart_lock = threading.Lock()
        self._worker = self._start()

    def _start(self) -> threading.Thread:
        worker = threading.Thread(target=self._run, name="lmops-engine", daemon=True)
        worker.start()
        return worker

    # ---- the request side ---------------------------------------------------------------------
    def submit(self, prompt: str, max_tokens: int, temperature: float = 0.0, stop: list[str] | None = None,
               sink=None) -> Future:
        """Queue one generation; its Result comes through the future. With a `sink` (streaming) the
        text is also pushed there token by token while it is generated."""
        self.ensure_alive()
        job = Job(prompt, max_tokens, temperature, list(stop or []), sink=sink)
        if sink is not None:
            sink.attach(job.future)
        self.jobs.put(job)
        return job.future

    def swap(self, loaded: Loaded) -> None:
        """Serve `loaded` from the next batch on; the batch running now finishes on the old model."""
        old, self.current = self.current, loaded
        self.swaps += 1
        log.info("now serving %s %s (was %s) from %s", loaded.name, loaded.version, old.version, loaded.path)

    def close(self) -> None:
        self._stop.set()
        self._worker.join(5)

    # ---- the worker's health --------------------------------------------------------------------
    def ensure_alive(self) -> bool:
        """Start a new worker if the current one died (never while closing); whether one runs now."""
        if self._worker.is_alive() or self._stop.is_set():
            return self._worker.is_alive()
        with self._restart_lock:
            if not self._worker.is_alive() and not self._stop.is_set():
                self.restarts += 1
                log.error("the generation worker died; starting a new one (restart %d, %d requests queued)",
                          self.restarts, self.jobs.qsize())
                self._worker = self._start()
        return self._worker.is_alive()

    def health(self) -> dict:
        """The worker's state for GET /health (restarting a dead worker first)."""
        alive = self.ensure_alive()
        busy = self.busy_since
        return {"alive": alive, "restarts": self.restarts, "queue": self.jobs.qsize(),
                "last_batch_s_ago": None if self.last_batch is None else round(time.time() - self.last_batch, 3),
                "busy_s": None if busy is None else round(time.monotonic() - busy, 3)}

    # ---- the worker ---------------------------------------------------------------------------
    def _take_batch(self) -> list[Job]:
        try:
            batch = [self.jobs.get(timeout=0.1)]
        except queue.Empty:
            return []
        while len(batch) < self.max_batch:
            try:
                batch.append(self.jobs.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        while not self._stop.is_set():
            batch = self._take_batch()
            if not batch:
                continue
            self.busy_since = time.monotonic()
            try:
                self._batch(batch)
            except Exception as err:  # a bug outside the per-group handling: fail the batch, keep the worker
                log.exception("a generation batch failed")
                for job in batch:
                    _fail(job, err)
            finally:
                self.busy_since = None
                self.last_batch = time.time()

    def _batch(self, batch: list[Job]) -> None:
        loaded = self.current  # one model for the whole batch, even if a swap lands meanwhile
        # Greedy and sampled jobs need different generate() calls; group by those settings.
        groups: dict[tuple, list[Job]] = {}
        for job in batch:
            if job.future.done():  # its client stopped waiting (a timeout cancels the future)
                continue
            groups.setdefault((job.temperature > 0, job.temperature), []).append(job)
        for jobs in groups.values():
            # Tokenizers are used on this thread only: a fast tokenizer is not safe to share.
            jobs = [j for j in jobs if _fits(loaded, j)]
            if not jobs:
                continue
            try:
                results = generate(loaded, jobs)
            except Exception as err:  # a generation bug fails its requests, never the worker
                if len(jobs) == 1:
                    log.exception("generation failed")
                    _fail(jobs[0], err)
                    continue
                log.warning("a batch of %d failed (%s: %s); generating its requests one at a time",
                            len(jobs), type(err).__name__, err)
                self._one_by_one(loaded, jobs)
                continue
            for job, result in zip(jobs, results):
                _settle(job, result)

    def _one_by_one(self, loaded: Loaded, jobs: list[Job]) -> None:
        for job in jobs:
            try:
                _settle(job, generate(loaded, [job])[0])
            except Exception as err:
                log.exception("generation failed")
                _fail(job, err)


def _settle(job: Job, result: Result) -> None:
    try:
        job.future.set_result(result)
    except InvalidStateError:  # cancelled meanwhile: nobody waits for it
        pass


def _fail(job: Job, err: BaseException) -> None:
    try:
        job.future.set_exception(err)
    except InvalidStateError:
        pass


def _fits(loaded: Loaded, job: Job) -> bool:
    """Fail the job with PromptTooLong (a 400 for the client) unless prompt + completion fit; a prompt
    the tokenizer cannot take fails its job (a 500), not the worker."""
    try:
        n = len(loaded.tokenizer(job.prompt, add_special_tokens=False)["input_ids"])
    except Exception as err:
        log.exception("tokenizing a prompt failed")
        _fail(job, err)
        return False
    if n == 0:
        _fail(job, PromptTooLong("the prompt is empty after tokenization"))
        return False
    if n + job.max_tokens > loaded.context:
        _fail(job, PromptTooLong(
            f"the prompt is {n} tokens and max_tokens is {job.max_tokens}, but {loaded.name} {loaded.version} "
            f"has a context of {loaded.context} tokens: shorten the prompt or lower max_tokens"))
        return False
    return True


def generate(loaded: Loaded, jobs: list[Job]) -> list[Result]:
    """Generate every job's completion in one left-padded batch, with per-token log-probs."""
    import torch

    backend = getattr(loaded.model, "serve_generate", None)  # another engine's export (lmops.engines.serving)
    if backend is not None:
        return backend(loaded, jobs)

    tok, model = loaded.tokenizer, loaded.model
    tok.padding_side = "left"  # decoder-only models continue from the right edge
    enc = tok([j.prompt for j in jobs], return_tensors="pt", padding=True, add_special_tokens=False)
    max_new = max(j.max_tokens for j in jobs)
    temperature = jobs[0].temperature
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    from transformers import StoppingCriteriaList

    stopper = _RowStop(tok, jobs, enc["input_ids"].shape[1])
    if any(j.sink is not None for j in jobs):  # streamed rows get their text after every step
        from lmops.serve.stream import RowStreamer

        sampling["streamer"] = RowStreamer(tok, jobs, loaded.version)
    enc = enc.to(model.device)
    cache = {}
    if getattr(model, "lmops_kv", None) is not None:  # a quantized variant with an int8/int4 KV cache
        from lmops.quant.kv import cache_args

        cache = cache_args(model)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new, pad_token_id=tok.pad_token_id,
                             output_scores=True, return_dict_in_generate=True,
                             stopping_criteria=StoppingCriteriaList([stopper]), **sampling, **cache)
        # (B, new) log-prob of each chosen token under the (unwarped) model distribution
        scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    new_ids = out.sequences[:, enc["input_ids"].shape[1]:]
    results = []
    for i, job in enumerate(jobs):
        ids = new_ids[i, :job.max_tokens].tolist()
        if tok.eos_token_id in ids:  # stop at EOS (padding after it is not part of the answer)
            ids = ids[:ids.index(tok.eos_token_id)]
        text = tok.decode(ids, skip_special_tokens=True)
        text, n, reason = _apply_stop(tok, text, ids, job)
        lp = scores[i, :n]
        mean_lp = float(lp[torch.isfinite(lp)].mean()) if n and torch.isfinite(lp).any() else None
        results.append(Result(text, int(enc["attention_mask"][i].sum()), n, mean_lp, reason, loaded.version))
    return results


class _RowStop:
    """Per-row early stop: a row is done once its continuation holds one of its stop strings or it
    reached its own max_tokens, and generate() ends when every row is done. QA answers are a few
    tokens and end at a newline, so this saves most of the decoding steps."""

    def __init__(self, tok, jobs: list[Job], prompt_len: int):
        self.tok, self.jobs, self.prompt_len = tok, jobs, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[:, self.prompt_len:]
        done = []
        for i, job in enumerate(self.jobs):
            if new.shape[1] >= job.max_tokens:
                done.append(True)
                continue
            text = self.tok.decode(new[i].tolist(), skip_special_tokens=True) if job.stop else ""
            done.append(any(s and s in text for s in job.stop))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _apply_stop(tok, text: str, ids: list[int], job: Job) -> tuple[str, int, str]:
    """Cut `text` at the first stop string; return it, its token count, and the finish reason."""
    cut = min((text.index(s) for s in job.stop if s and s in text), default=None)
    if cut is not None:
        text = text[:cut]
        return text, len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0, "stop"
    return text, len(ids), "length" if len(ids) >= job.max_tokens else "stop"
