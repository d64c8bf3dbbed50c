"""Every project path, in one place: stages, tasks, flows and the CLI import them from here, and
`tests/test_layout.py` checks `dvc.yaml` against them. Paths are relative to the project root."""
from __future__ import annotations

from pathlib import Path

# Inputs and DVC-tracked outputs
CORPUS = Path("data/corpus")
PRETRAINED = Path("models/pretrained")
REAL_MODEL = Path("models/smollm2-135m-instruct")  # the `real_model` stage's import (params real_model.out)
REAL_PROFILE = Path("real")  # project root of the real-model profile (`make run-real`): its own data, models, metrics
BASE_MODEL = Path("models/base")
QUANT_DIR = Path("models/quantized")
LONGCTX_INDEX = Path("data/long_context_index")
PROMPTS_DIR = Path("prompts")
PROMPT_REGISTRY = Path("prompt_registry/registry.json")
TRAIN_STATS = "train_stats.json"  # inside a model directory

# Metrics, plots and reports (DVC metrics and plots, never cached)
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")


def metrics(stage: str) -> Path:
    """The metrics file of a stage: metrics/<name>.json."""
    return METRICS_DIR / f"{stage}.json"


BASE_METRICS = metrics("base")
PROMPTS_METRICS = metrics("prompts")
QUANT_METRICS = metrics("quantization")
LONGCTX_METRICS = metrics("long_context")
SUMMARY_METRICS = metrics("summary")  # the headline figures: what `dvc metrics show` / `dvc exp show` compare
TIMINGS = metrics("timings")  # every duration and speed of the run: a plain output, never compared by default
DRIFT_METRICS = metrics("drift")  # the scenario flow's summary; a top-level dvc.yaml metric, no stage's output

TRAIN_LOSS = PLOTS_DIR / "train_loss"  # .csv (DVC plot) and .png
PRETRAIN_LOSS = PLOTS_DIR / "pretrain_loss"
PROMPTS_TRAJECTORY = PLOTS_DIR / "prompts_trajectory.csv"
PROMPTS_REPORT = REPORTS_DIR / "prompts.md"
QUANT_CSV = PLOTS_DIR / "quantization.csv"
QUANT_PNG = PLOTS_DIR / "quantization_frontier.png"
QUANT_TABLE = PLOTS_DIR / "quantization.md"
LONGCTX_REPORT = REPORTS_DIR / "long_context.md"
LONGCTX_PLOTS = PLOTS_DIR / "long_context"  # heatmap + perplexity PNGs
LONGCTX_PASSKEY_CSV = PLOTS_DIR / "long_context_passkey.csv"
LONGCTX_PPL_CSV = PLOTS_DIR / "long_context_ppl.csv"

# Operational state: git-ignored, never a DVC output (live serving, monitoring, retraining)
STATE = Path(".lmops")
REGISTRY_STORE = STATE / "registry"
MONITOR_STATE = STATE / "monitor"
MONITOR_WINDOWS = MONITOR_STATE / "windows.json"  # every judged window (live monitoring; never a DVC metric)
RETRAIN_RECORDS = STATE / "retrain"
PARAMS_CHECKED = STATE / "params.checked"  # the `check` stage's output: every other stage depends on it
SCENARIO_SANDBOX = STATE / "drift-scenario"  # the scenario flow's sandbox project (its summary: DRIFT_METRICS)
STAGE_TIMES = STATE / "stage_times.json"  # seconds each stage last took when it ran (`lmops run`'s estimates)
PRODUCTION_LOGS = Path("logs/production")
RETRAIN_SNAPSHOTS = Path("data/retrain")
CHALLENGER = Path("models/challenger")
KNOWLEDGE_INDEX = Path("data/knowledge_index")  # LanceDB: the domain documents retraining keeps current

# Fan-out (docs/scale-out.md): one flow run per quantization scheme or long-context method, each on a
# worker in its own clone; its outputs are `dvc add`ed under GRID_DIR/<kind>/<item> and pushed, and the
# merged table and frontier are written here.
GRID_DIR = Path("models/grid")
GRID_REPORT = REPORTS_DIR / "grid_{kind}.md"
GRID_PNG = PLOTS_DIR / "grid_{kind}.png"
