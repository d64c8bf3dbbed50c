"""The orchestration layer's `lmops` subcommands, registered through the `lmops.commands` entry-point
group (pyproject.toml): the core `lmops` never imports Prefect, `flows/` or `deployments/`, yet users
type one command. Each `add_*` receives the CLI's subparsers and registers one command; Prefect is
imported only when that command runs."""
from __future__ import annotations

from pathlib import Path

from lmops.cli import params_of


def _stop_children_on_sigterm() -> None:
    """SIGTERM (a timeout, `kill PID`) unwinds like Ctrl-C, so the scenario's worker and model
    server are stopped by its `finally`."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def add_run(sub) -> None:
    def run(args) -> None:
        params_of(args)  # fail on bad params before starting Prefect
        from flows.pipeline import lmops_pipeline

        _stop_children_on_sigterm()
        lmops_pipeline(project=str(Path(args.root).resolve()), push_data=not args.no_push,
                       scenario=not args.no_scenario)

    p = sub.add_parser("run", help="run the whole pipeline as the Prefect flow `lmops-pipeline` "
                       "(the DVC stages, then the closed-loop scenario)")
    p.add_argument("--no-push", action="store_true", help="skip pushing data to the DVC remote")
    p.add_argument("--no-scenario", action="store_true", help="skip the closed-loop scenario (metrics/drift.json)")
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

        port = ["--model-port", str(args.model_port)] if args.model_port else []
        raise SystemExit(main(["--root", args.root, "--params", args.params, "--prefect-port", str(args.prefect_port),
                               *port]))

    p = sub.add_parser("up", help="start the local stack on loopback: Prefect server + UI, process worker, "
                       "monitoring and retraining deployments, model server")
    p.add_argument("--prefect-port", type=int, default=4200, help="Prefect server/UI port (default 4200)")
    p.add_argument("--model-port", type=int, help="model server port (default: serve.port of the params file)")
    p.set_defaults(func=up)


def add_scenario(sub) -> None:
    def run_scenario(args) -> None:
        params_of(args)
        _stop_children_on_sigterm()
        import json

        from flows.scenario import scenario

        print(json.dumps(scenario(project=str(Path(args.root).resolve())), indent=2, default=str))

    p = sub.add_parser("scenario", help="play the closed loop (traffic, drift, event-triggered retraining, promotion) "
                       "as the Prefect flow `lmops-scenario` against PREFECT_API_URL; writes metrics/drift.json")
    p.set_defaults(func=run_scenario)
