"""Serving benchmark: 20 concurrent clients against a real `lmops serve` process on 127.0.0.1.

Target (issue 6): zero failed requests, every request logged, p50 and p99 latency reported.

    python benchmarks/serve.py [--model-dir models/base] [--requests 400] [--clients 20]

The server is a separate process (`lmops serve`, as in production), so client threads and the
server do not share a GIL. The traffic is `lmops simulate`'s in-distribution mix. The model is
`--model-dir`, else the first of models/base and models/pretrained that exists, else a randomly
initialised model of the default architecture (said so in the output: latency is what this
measures, and it does not depend on the weights).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def corpus_dir(work: Path) -> Path:
    """The project's corpus if built, else the default corpus generated into `work`."""
    from lmops.data import build_corpus
    from lmops.params import DataParams

    if (ROOT / "data" / "corpus" / "qa.jsonl").exists():
        return ROOT / "data" / "corpus"
    build_corpus(DataParams(), work / "corpus")
    return work / "corpus"


def model_dir(arg: str | None, corpus: Path, work: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg).resolve(), "given"
    for candidate in ("models/base", "models/pretrained"):
        if (ROOT / candidate / "config.json").exists():
            return ROOT / candidate, candidate
    from lmops.data import Corpus
    from lmops.model.build import build_model, train_tokenizer
    from lmops.model.train import training_texts
    from lmops.params import TrainParams

    tp = TrainParams()
    tokenizer = train_tokenizer(training_texts(Corpus.load(corpus), 0), tp.arch.vocab_size)
    build_model(tp.arch, tokenizer, tp.context, 0).save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    return work / "model", "random-init (default architecture)"


def start_server(work: Path, model: Path, port: int, max_batch: int) -> subprocess.Popen:
    params = {"serve": {"port": port, "fallback_dir": str(model), "log_dir": str(work / "logs"),
                        "reload_seconds": 0, "max_batch": max_batch, "threads": 1}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmops.cli", "--root", str(work), "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"server did not start:\n{(work / 'server.log').read_text()[-3000:]}")


def run(model: Path, corpus: Path, work: Path, requests: int, clients: int, max_batch: int) -> dict:
    from lmops.data import Corpus
    from lmops.params import SimulateParams
    from lmops.serve.logstore import read_logs
    from lmops.serve.simulate import Traffic, send

    port = free_port()
    proc = start_server(work, model, port, max_batch)
    try:
        traffic = Traffic(SimulateParams(seed=1), Corpus.load(corpus))
        send(traffic, f"http://127.0.0.1:{port}", requests=clients, concurrency=clients)  # warm-up
        result = send(traffic, f"http://127.0.0.1:{port}", requests=requests, concurrency=clients,
                      start_index=clients)
    finally:
        proc.terminate()  # SIGTERM: uvicorn shuts down and the log writer flushes what it holds
        proc.wait(60)
    logs = read_logs(work / "logs")
    sent = sum(result.sent.values()) + clients
    return {"max_batch": max_batch, "requests": requests, "failed": sum(result.failed.values()),
            "logged": len(logs), "sent_incl_warmup": sent, "p50_ms": result.percentile(0.5),
            "p99_ms": result.percentile(0.99), "req_per_s": requests / result.seconds,
            "errors": result.errors[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--max-batch", type=int, nargs="+", default=[8, 1],
                    help="server batch sizes to compare (1 = one request at a time)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmops-bench-serve-") as tmp:
        work = Path(tmp)
        corpus = corpus_dir(work)
        model, source = model_dir(args.model_dir, corpus, work)
        for mb in args.max_batch:
            run_dir = work / f"batch{mb}"
            run_dir.mkdir()
            rows.append(run(model, corpus, run_dir, args.requests, args.clients, mb))
    print(f"\nmodel: {model} ({source}); {args.clients} concurrent clients, {args.requests} requests per row\n")
    print("| max_batch | requests | failed | logged / sent | p50 ms | p99 ms | req/s | target met |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ok = r["failed"] == 0 and r["logged"] == r["sent_incl_warmup"]
        print(f"| {r['max_batch']} | {r['requests']} | {r['failed']} | {r['logged']} / {r['sent_incl_warmup']} | "
              f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['req_per_s']:.1f} | {'yes' if ok else 'NO'} |")
        if r["errors"]:
            print("  errors:", r["errors"])


if __name__ == "__main__":
    main()
