"""Production-like log rows without HTTP: the simulator's requests answered by the serving engine's
own `generate`, in-process. For benchmarks that need many windows (20 in-distribution windows take
seconds this way, minutes through the server). The scenario and the tests use the real server."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

from lmops.params import SimulateParams


def offline_rows(sim: SimulateParams, corpus, loaded, start_index: int, n: int, t0: datetime,
                 seconds_per_request: float = 0.1, batch: int = 16) -> list[dict]:
    """Rows in the log store's schema for simulator requests start_index .. start_index + n."""
    from lmops.serve.engine import Job, generate
    from lmops.serve.simulate import Traffic

    traffic, rows = Traffic(sim, corpus), []
    reqs = [traffic.request(i) for i in range(start_index, start_index + n)]
    for b in range(0, n, batch):
        chunk = reqs[b:b + batch]
        prompts = [r.body.get("prompt") or r.body["messages"][-1]["content"] for r in chunk]
        began = time.perf_counter()
        results = generate(loaded, [Job(p, r.body["max_tokens"], 0.0, ["\n"]) for p, r in zip(prompts, chunk)])
        latency = (time.perf_counter() - began) * 1000
        for k, (req, prompt, res) in enumerate(zip(chunk, prompts, results)):
            rows.append({"request_id": f"offline-{req.index}", "timestamp": t0 + timedelta(seconds=(b + k) * seconds_per_request),
                         "endpoint": req.endpoint, "status": 200, "error": None, "model": loaded.name,
                         "model_version": loaded.version, "prompt_version": "none", "prompt": prompt,
                         "rendered_prompt": prompt, "response": res.text, "prompt_tokens": res.prompt_tokens,
                         "completion_tokens": res.completion_tokens, "latency_ms": latency,
                         "mean_logprob": res.mean_logprob, "user": f"sim:{req.kind}"})
    return rows
