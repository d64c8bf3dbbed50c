"""Model-quality proxies from the serving logs, each a normed Wasserstein distance to the reference.

`response_loglik` is the server's own `mean_logprob` (mean log-probability of the generated tokens
under the serving model): a label-free quality proxy, since a model answering about things it never
saw, or off its domain, is less sure of its answers. `latency_ms` has its own kind, a warning by
default: on a shared CPU it drifts with the load."""
from __future__ import annotations

from lmops.monitor.descriptor import Kind, register, register_kind, value_drift

register_kind(Kind("quality", threshold=0.3, doc="normed Wasserstein distance of a model-quality proxy"))
register_kind(Kind("latency", threshold=0.5, warn_only=True, doc="normed Wasserstein distance of the latency"))

register(value_drift("response_loglik", "quality",
                     lambda logs, ctx: logs["mean_logprob"].astype(float).fillna(0.0).tolist()))
register(value_drift("output_tokens", "quality", lambda logs, ctx: logs["completion_tokens"].astype(float).tolist()))
register(value_drift("latency_ms", "latency", lambda logs, ctx: logs["latency_ms"].astype(float).tolist()))
