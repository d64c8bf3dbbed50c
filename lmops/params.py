"""`params.yaml`, validated. One pydantic model per stage section; unknown keys are errors.

`load_params()` runs before any work, so a typo fails in a second with the key's dotted path
instead of an hour into training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    seed: int = 0
    entities: int = Field(600, ge=10)
    incidents_per_entity: int = Field(2, ge=1)
    recall_items: int = Field(3000, ge=20)
    recall_filler: tuple[int, int] = (2, 8)  # filler sentences between a fact and its question
    ood_sentences: int = Field(400, ge=8)
    val_share: float = Field(0.15, gt=0, lt=0.5)
    test_share: float = Field(0.15, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _filler_range(self) -> "DataParams":
        if not 0 <= self.recall_filler[0] <= self.recall_filler[1]:
            raise ValueError("recall_filler must be [low, high] with 0 <= low <= high")
        return self


class ArchParams(Section):
    """Architecture of a model trained from scratch (ignored when starting from a checkpoint)."""
    type: Literal["llama", "qwen2", "mistral"] = "llama"
    vocab_size: int = Field(1024, ge=300)
    hidden_size: int = Field(128, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(384, ge=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> "ArchParams":
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden_size must divide by heads, and heads by kv_heads")
        return self


class TrainParams(Section):
    # "scratch", or a Hugging Face causal-LM directory (the committed checkpoint, or your own model).
    base: str = "models/pretrained"
    arch: ArchParams = ArchParams()
    context: int = Field(256, ge=32)  # the trained context length, in tokens
    steps: int = Field(200, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-4, gt=0, lt=1)
    warmup: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    seed: int = 0
    threads: int = Field(2, ge=1)


class PretrainParams(TrainParams):
    """The long from-scratch run behind the committed checkpoint (`lmops pretrain`)."""
    base: str = "scratch"
    out: str = "models/pretrained"
    steps: int = Field(1000, ge=1)
    lr: float = Field(2e-3, gt=0, lt=1)
    warmup: int = Field(100, ge=0)


class EvaluateParams(Section):
    max_items: int = Field(200, ge=1)  # per exact-match task
    ppl_tokens: int = Field(20000, ge=256)  # validation tokens scored for perplexity
    max_new_tokens: int = Field(12, ge=1)
    threads: int = Field(2, ge=1)


class RopeParams(Section):
    types: list[Literal["linear", "dynamic", "yarn"]] = ["linear", "dynamic", "yarn"]
    factor: float = Field(8.0, ge=1)  # how far the trained context is stretched (8 covers the longest prompt)


class PIFinetuneParams(Section):
    """Position-interpolation fine-tune of each RoPE variant (Chen et al. use ~1000 steps; CPU budget)."""
    steps: int = Field(24, ge=0)  # 0 skips the fine-tuned variants
    length_multiple: float = Field(2.0, ge=1)  # training length, in multiples of the trained context
    batch_size: int = Field(2, ge=1)
    lr: float = Field(5e-4, gt=0, lt=1)


class NBCEParams(Section):
    beta: float = Field(0.25, ge=0)  # weight of the no-context correction (naive Bayes: n-1, clamped to it)
    chunk_tokens: int = Field(0, ge=0)  # context tokens per row; 0 = as many as fit beside the question
    overlap: int = Field(32, ge=0)  # tokens shared by consecutive context chunks
    sample: bool = False  # greedy unless true
    temperature: float = Field(1.0, gt=0)


class RetrievalParams(Section):
    chunk_tokens: int = Field(128, ge=8)  # must fit the trained context with the question
    overlap: int = Field(32, ge=0)
    top_k: int = Field(3, ge=1)
    mode: Literal["vector", "fts", "hybrid"] = "hybrid"
    rrf_k: int = Field(60, ge=1)  # reciprocal-rank fusion constant


class LongContextParams(Section):
    seed: int = 4242  # the suite's seed: not the corpus seed, so no item is a training item
    lengths: list[int] = [1, 2, 4, 8]  # passkey prompt lengths, in multiples of the trained context
    depths: list[float] = [0.1, 0.5, 0.9]  # needle position, 0 = start of the context
    passkey_items: int = Field(6, ge=1)  # per (length, depth) cell
    kb_entities: int = Field(60, ge=2)  # fresh entities in the knowledge base
    kb_questions: int = Field(30, ge=1)
    kb_multiple: int = Field(8, ge=1)  # KB-QA context for full-context methods, in trained contexts
    ppl_sequences: int = Field(4, ge=1)  # sequences of max(lengths) tokens for perplexity by position
    max_new_tokens: int = Field(8, ge=1)
    threads: int = Field(1, ge=1)  # one thread: two spin-wait on each other on a shared CPU
    rope: RopeParams = RopeParams()
    finetune: PIFinetuneParams = PIFinetuneParams()
    nbce: NBCEParams = NBCEParams()
    retrieval: RetrievalParams = RetrievalParams()

    @model_validator(mode="after")
    def _ranges(self) -> "LongContextParams":
        if not self.lengths or min(self.lengths) < 1:
            raise ValueError("lengths must be multiples >= 1 of the trained context")
        if not self.depths or not all(0 <= d <= 1 for d in self.depths):
            raise ValueError("depths must lie in [0, 1]")
        return self


class ServeParams(Section):
    """`lmops serve`: the OpenAI-compatible server of the registry's champion (loopback by default)."""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model: str = "lmops-model"  # registry artifact name; also the `model` clients ask for
    alias: str = "champion"
    fallback_dir: str = "models/base"  # served as version "unregistered" until a champion exists
    registry_store: str = ".lmops/registry"
    log_dir: str = "logs/production"
    log_flush_seconds: float = Field(1.0, gt=0)
    log_batch_rows: int = Field(256, ge=1)
    reload_seconds: float = Field(2.0, ge=0)  # registry poll interval; 0 = only POST /admin/reload
    max_prompt_chars: int = Field(8000, ge=16)  # rejected before tokenizing (413)
    default_max_tokens: int = Field(16, ge=1)
    max_tokens_limit: int = Field(64, ge=1)
    max_batch: int = Field(8, ge=1)  # requests generated together (left-padded) per step
    request_timeout: float = Field(60.0, gt=0)
    threads: int = Field(1, ge=1)  # torch threads for generation
    prompt_hook: str = ""  # "module:function" returning (prompt, version); "" = prompts used as sent


class DriftParams(Section):
    share: float = Field(0.0, ge=0, le=1)  # share of requests of this kind once it has started
    onset: int = Field(0, ge=0)  # request index where it starts
    onset_seconds: float | None = Field(None, ge=0)  # or: seconds after the simulation starts


class SimulateParams(Section):
    """`lmops simulate`: traffic against a running server, with configurable drift."""
    url: str = "http://127.0.0.1:8000"
    requests: int = Field(500, ge=1)
    concurrency: int = Field(4, ge=1)
    seed: int = 0
    max_tokens: int = Field(12, ge=1)
    incident_share: float = Field(0.3, ge=0, le=1)  # classification prompts among in-domain requests
    open_book_share: float = Field(0.5, ge=0, le=1)  # questions sent after their profile document
    fresh_entities: int = Field(60, ge=4)  # unseen entities (FRESH_KINDS) for the topic shift
    fresh_seed: int = 1000
    topic: DriftParams = DriftParams()  # entities and documents the model never saw
    style: DriftParams = DriftParams()  # the same questions, phrased the way people type
    ood: DriftParams = DriftParams()  # out-of-domain text

    @model_validator(mode="after")
    def _shares(self) -> "SimulateParams":
        if self.topic.share + self.style.share + self.ood.share > 1:
            raise ValueError("topic.share + style.share + ood.share must be at most 1")
        return self


class Params(Section):
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    pretrain: PretrainParams = PretrainParams()
    long_context: LongContextParams = LongContextParams()
    serve: ServeParams = ServeParams()
    simulate: SimulateParams = SimulateParams()


class ParamsError(ValueError):
    """A bad params.yaml: the message names the file and every offending key."""


def validate(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()]
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(lines)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    return validate(raw, str(path))
