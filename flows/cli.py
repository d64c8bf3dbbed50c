"""The orchestration layer's `lmops` subcommands, registered through the `lmops.commands` entry-point
group (pyproject.toml): the core `lmops` never imports Prefect, `flows/` or `deployments/`, yet users
type one command. Each `add_*` receives the CLI's subparsers and registers one command; Prefect is
imported only when that command runs."""
from __future__ import annotations

from pathlib import Path

from lmops.cli import params_of


def add_run(sub) -> None:
    def run(args) -> None:
        params_of(args)  # fail on bad params before starting Prefect
        from flows.pipeline import lmops_pipeline

        lmops_pipeline(project=str(Path(args.root).resolve()), push_data=not args.no_push)

    p = sub.add_parser("run", help="run the whole pipeline as the Prefect flow `lmops-pipeline`")
    p.add_argument("--no-push", action="store_true", help="skip pushing data to the DVC remote")
    p.set_defaults(func=run)


def add_pretrain(sub) -> None:
    def pretrain(args) -> None:
        params_of(args)
        from flows.pretrain import pretrain as flow

        flow(project=str(Path(args.root).resolve()))

    p = sub.add_parser("pretrain", help="train the base checkpoint from scratch (the `pretrain` params section)")
    p.set_defaults(func=pretrain)


def add_up(sub) -> None:
    def up(args) -> None:
        params_of(args)
        from deployments.up import main

        raise SystemExit(main(["--root", args.root, "--params", args.params, "--prefect-port", str(args.prefect_port)]))

    p = sub.add_parser("up", help="start the local stack on loopback: Prefect server + UI, process worker, "
                       "monitoring and retraining deployments, model server")
    p.add_argument("--prefect-port", type=int, default=4200, help="Prefect server/UI port (default 4200)")
    p.set_defaults(func=up)
