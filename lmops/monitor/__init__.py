"""Drift monitoring of production logs: windows of logged requests, per-row features (offline text
descriptors, MiniLM embeddings, model-quality proxies), and an Evidently report whose tests turn the
`drift.monitor` thresholds into pass/fail. No Prefect here: `flows/monitor.py` wires it."""
