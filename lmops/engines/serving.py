"""An engine export as an `lmops serve` backend: `lmops.serve.engine.LOADERS` maps the export's
`engine.json` to `load_export`, and the server's `generate` hands a batch to `EngineModel.serve_generate`
instead of `model.generate()`. Everything else (routes, chat template, request log, metrics, hot
reload, stop strings, context check) is the server's own, unchanged.

The tokenizer is the Hugging Face one saved into the export (chat template included), so prompts are
tokenized exactly as for the PyTorch model; the engine decodes from those token ids.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace


class EngineModel:
    """The few attributes the server reads from a model, and the engine's own generation."""

    def __init__(self, runner, meta: dict, path: Path):
        self.runner, self.meta, self.path = runner, meta, path
        self.config = SimpleNamespace(max_position_embeddings=runner.context, eos_token_id=meta.get("eos_token_id"))

    def __repr__(self) -> str:
        return f"EngineModel({self.meta['engine']}, {self.meta['bits']} bits, {self.path})"

    def serve_generate(self, loaded, jobs) -> list:
        """One Result per job (the engine decodes batch 1, job after job)."""
        from lmops.serve.engine import Result, _apply_stop

        tok, results = loaded.tokenizer, []
        eos = tok.eos_token_id
        for job in jobs:
            ids = tok(job.prompt, add_special_tokens=False)["input_ids"]
            new, lps = [], []
            for token, lp in self.runner.stream(ids, job.max_tokens, job.temperature):
                if token == eos:
                    break
                new.append(token)
                lps.append(lp)
                if job.stop and any(s and s in tok.decode(new, skip_special_tokens=True) for s in job.stop):
                    break
            text = tok.decode(new, skip_special_tokens=True)
            text, n, reason = _apply_stop(tok, text, new, job)
            finite = [x for x in lps[:n] if x is not None and x == x and abs(x) != float("inf")]
            results.append(Result(text, len(ids), n, sum(finite) / len(finite) if finite else None, reason,
                                  loaded.version))
        return results


def load_export(path: str | Path, threads: int | None = None) -> tuple[EngineModel, object]:
    """(EngineModel, tokenizer) of an engine export; a corrupt or unreadable one is an InputError naming
    the file (so a hot reload keeps serving the old model). Threads: `threads`, else the process' torch
    thread count."""
    import torch
    from transformers import AutoTokenizer

    from lmops.engines.base import open_export

    path = Path(path)
    runner, meta = open_export(path, threads or torch.get_num_threads())
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return EngineModel(runner, meta, path), tokenizer
