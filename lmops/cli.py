"""The `lmops` command: the one entry point for the README, `dvc.yaml` and deployments."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmops.io import InputError
from lmops.params import ParamsError, load_params
from lmops.quant.config import QuantError


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ParamsError, InputError, QuantError) as err:
        print(f"lmops: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
