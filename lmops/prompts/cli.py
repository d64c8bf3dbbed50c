"""`lmops prompts list|show|promote`: read and move aliases in the prompt registry."""
from __future__ import annotations

import json
from pathlib import Path

from lmops.params import Params


def add_prompts_parser(sub, func) -> None:
    p = sub.add_parser("prompts", help="the prompt registry: list versions, show one, promote the candidate")
    psub = p.add_subparsers(dest="prompts_command", required=True, metavar="ACTION")
    psub.add_parser("list", help="every registered prompt version with its aliases and scores")
    s = psub.add_parser("show", help="one version, with its rendered template and scores")
    s.add_argument("ref", help="NAME@ALIAS or NAME@VERSION (e.g. kb_qa@production); NAME alone means production")
    pr = psub.add_parser("promote", help="point an alias (default production) at a version (default the candidate)")
    pr.add_argument("ref", help="NAME (its candidate), NAME@ALIAS or NAME@VERSION")
    pr.add_argument("--to", default="production", help="alias to move (default: production)")
    p.set_defaults(func=func)


def run_prompts_command(args, params: Params, root: Path) -> None:
    from lmops.prompts.registry import PromptRegistry

    path = Path(params.prompts.registry)
    registry = PromptRegistry.open(path if path.is_absolute() else root / path)
    if args.prompts_command == "list":
        rows = registry.rows()
        if not rows:
            print(f"no prompts registered in {registry.path} (run `lmops stage prompts`)")
        for r in rows:
            print(f"{r['name']}@{r['version']:<3} {r['aliases'] or '-':<22} source={r['source']:<8} "
                  f"dev={r['dev']} test={r['test']}")
    elif args.prompts_command == "show":
        v = registry.get(args.ref)
        print(json.dumps({k: v[k] for k in ("name", "version", "aliases", "source", "created", "scores", "spec")}, indent=2))
        print("template:\n" + v["template"])
    else:
        version = registry.promote(args.ref, args.to)
        registry.save()
        print(f"{args.ref.partition('@')[0]}@{args.to} -> version {version}")
