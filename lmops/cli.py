"""The `lmops` command: the one entry point for the README, `dvc.yaml` and deployments."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmops.io import InputError
from lmops.params import ParamsError, load_params


def _params(args):
    return load_params(Path(args.root) / args.params)


def cmd_stage(args) -> None:
    from lmops.stages import run_stage, summary

    result = run_stage(args.name, _params(args), Path(args.root))
    print(f"stage {args.name} done:\n{summary(result)}")


def cmd_params(args) -> None:
    import yaml

    print(yaml.safe_dump(_params(args).model_dump(mode="json"), sort_keys=False))


def cmd_run(args) -> None:
    _params(args)  # fail on bad params before starting Prefect
    from flows.pipeline import lmops_pipeline  # lazy: lmops itself never imports Prefect

    lmops_pipeline(project=str(Path(args.root).resolve()), push_data=not args.no_push)


def cmd_pretrain(args) -> None:
    _params(args)
    from flows.pretrain import pretrain

    pretrain(project=str(Path(args.root).resolve()))


def cmd_serve(args) -> None:
    from lmops.serve import serve

    p = _params(args).serve
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    serve(p.model_copy(update=overrides), Path(args.root))


def cmd_simulate(args) -> None:
    from lmops.serve.simulate import simulate

    p = _params(args)
    sim = p.simulate.model_copy(update={k: v for k, v in {"url": args.url, "requests": args.requests}.items()
                                        if v is not None})
    print(simulate(sim, Path(args.root)).table())


def cmd_models(args) -> None:
    from lmops.registry.cli import run_models

    run_models(args, _params(args).serve, Path(args.root))


def build_parser() -> argparse.ArgumentParser:
    from lmops.stages import STAGES

    parser = argparse.ArgumentParser(prog="lmops", description="LMOps pipeline: data, training, quantization, "
                                     "long context, prompts and monitoring for language models.")
    parser.add_argument("--root", default=".", help="project directory holding params.yaml and dvc.yaml")
    parser.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole pipeline as the Prefect flow `lmops-pipeline`")
    p.add_argument("--no-push", action="store_true", help="skip pushing data to the DVC remote")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("stage", help="run one pipeline stage (what `dvc repro` calls)")
    p.add_argument("name", choices=sorted(STAGES), help="stage name, as in dvc.yaml")
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("params", help="validate params.yaml and print it with defaults filled in")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("pretrain", help="train the base checkpoint from scratch (the `pretrain` params section)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("serve", help="OpenAI-compatible server of the registry's champion (the `serve` section)")
    p.add_argument("--host", help="override serve.host (keep it loopback unless you mean it)")
    p.add_argument("--port", type=int, help="override serve.port")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("simulate", help="send simulated traffic, with drift, to a server (the `simulate` section)")
    p.add_argument("--url", help="override simulate.url")
    p.add_argument("--requests", type=int, help="override simulate.requests")
    p.set_defaults(func=cmd_simulate)

    from lmops.registry.cli import add_models_parser

    add_models_parser(sub).set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ParamsError, InputError) as err:
        print(f"lmops: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
