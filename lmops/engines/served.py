"""The serving path's decode rate of a frontier row: one greedy request through
`lmops.serve.engine.generate`, the function `lmops serve`'s worker runs per batch (a PyTorch variant
through `model.generate` with per-token log-probs, an engine export through its backend,
`lmops.engines.serving.EngineModel`). Kept apart from `frontier` so the quantize stage, which does not
measure it, does not depend on the server's code."""
from __future__ import annotations

import time


def served_rate(row, prompt_text: str, tokens: int) -> tuple[float, int]:
    """(completion tokens per second, completion tokens) of one request of `tokens` tokens."""
    from lmops.engines.base import read_marker
    from lmops.engines.serving import EngineModel
    from lmops.serve.engine import Job, Loaded, generate

    model = row.handle if row.engine == "lmops" else EngineModel(row.handle, read_marker(row.path), row.path)
    loaded = Loaded(model, row.tokenizer, row.name, row.name, row.path,
                    int(getattr(model.config, "max_position_embeddings", 0) or 2048))
    start = time.perf_counter()
    result = generate(loaded, [Job(prompt_text, tokens, 0.0)])[0]
    return result.completion_tokens / (time.perf_counter() - start), result.completion_tokens
