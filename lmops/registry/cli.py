"""`lmops models ...`: list, register, promote, roll back and get model versions."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmops.params import ServeParams


def add_models_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("models", help="the model registry (GTO tags): list, register, promote, rollback, get")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    m = msub.add_parser("list", help="every version with its aliases and lineage")
    m.add_argument("name", nargs="?", help="artifact name (default: serve.model)")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m = msub.add_parser("register", help="register a model directory as a new version")
    m.add_argument("name")
    m.add_argument("model_dir")
    m.add_argument("--parent", help="the version it was fine-tuned or quantized from")
    m.add_argument("--metrics", help="a metrics JSON file to record (e.g. metrics/base.json)")
    m.add_argument("--variant", default="full", help="'full' or the quantization method")
    _push_flag(m)
    m = msub.add_parser("promote", help="point an alias (champion, challenger) at a version")
    m.add_argument("name")
    m.add_argument("version")
    m.add_argument("--alias", default="champion", choices=["champion", "challenger"])
    _push_flag(m)
    m = msub.add_parser("rollback", help="point an alias back at its previous version")
    m.add_argument("name")
    m.add_argument("--alias", default="champion", choices=["champion", "challenger"])
    _push_flag(m)
    m = msub.add_parser("get", help="write the bytes of NAME@VERSION (or NAME@champion) to a directory; in a "
                                    "clone that did not register it, from DVC (cache, else the default remote)")
    m.add_argument("ref", metavar="NAME@VERSION")
    m.add_argument("-o", "--out", help="a new directory (default: ./NAME-VERSION)")
    return p


def _push_flag(m: argparse.ArgumentParser) -> None:
    m.add_argument("--push", action="store_true", help="then push every version's bytes to the default DVC remote "
                   "and the tags to git origin (the default when serve.push_registry is true)")


def push_if_asked(args, sp: ServeParams, root: Path, name: str) -> None:
    if getattr(args, "push", False) or sp.push_registry:
        from lmops.remote import push_registry, remote_of

        push_registry(root, name)
        print(f"pushed {name}'s versions to {remote_of(root)} and the tags to git origin")


def run_models(args, sp: ServeParams, root: Path) -> None:
    from lmops.io import read_json
    from lmops.registry import Registry, lineage_for

    reg = Registry(root, sp.registry_store)
    action = args.models_command
    if action == "list":
        name = args.name or sp.model
        versions = reg.versions(name)
        if args.json:
            print(json.dumps([{"version": v.version, "aliases": v.aliases, "commit": v.commit,
                               "lineage": vars(v.lineage)} for v in versions], indent=2))
            return
        print(f"{'version':<10} {'aliases':<22} {'parent':<9} {'variant':<8} {'data':<14} metrics")
        for v in versions:
            metrics = ", ".join(f"{k}={val}" for k, val in list(v.lineage.metrics.items())[:4])
            print(f"{v.version:<10} {','.join(v.aliases) or '-':<22} {v.lineage.parent or '-':<9} "
                  f"{v.lineage.variant:<8} {v.lineage.data_hash[:12] or '-':<14} {metrics}")
        if not versions:
            print(f"(no versions of {name} registered)")
    elif action == "register":
        lineage = lineage_for(root, read_json(args.metrics) if args.metrics else {}, args.parent, args.variant)
        v = reg.register(args.name, Path(args.model_dir), lineage)
        print(f"registered {v.name}@{v.version} (commit {v.commit[:8]}, model {v.lineage.model_hash[:8]})")
        push_if_asked(args, sp, root, args.name)
    elif action == "promote":
        v = reg.promote(args.name, args.version, args.alias)
        print(f"{v.name} {args.alias} -> {v.version}")
        push_if_asked(args, sp, root, args.name)
    elif action == "rollback":
        v = reg.rollback(args.name, args.alias)
        print(f"{v.name} {args.alias} rolled back -> {v.version}")
        push_if_asked(args, sp, root, args.name)
    elif action == "get":
        from lmops.errors import InputError

        name, sep, version = args.ref.rpartition("@")
        if not sep or not name or not version:
            raise InputError(f"{args.ref!r} is not NAME@VERSION (e.g. {sp.model}@v0.0.3 or {sp.model}@champion)")
        out = Path(args.out or f"{name}-{version}")
        v = reg.fetch(name, version, out)
        print(f"{v.name}@{v.version} -> {out} (model {v.lineage.model_hash[:8]})")
