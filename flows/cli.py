"""The orchestration layer's `lmops` subcommands, registered through the `lmops.commands` entry-point
group (pyproject.toml): the core `lmops` never imports Prefect, `flows/` or `deployments/`, yet users
type one command. Each `add_*` receives the CLI's subparsers and registers one command; Prefect is
imported only when that command runs."""
from __future__ import annotations

import os
from pathlib import Path

from lmops.cli import params_of
from lmops.errors import LmopsError

PREFECT_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"  # Prefect's own setting
DEFAULT_PREFECT_START_TIMEOUT = 180  # s; Prefect's default (20 s) is too short on a loaded machine


def _prefect_start_timeout(args) -> int:
    """--prefect-start-timeout, else $PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, else 180 s;
    set as Prefect's setting before Prefect is imported (and again around the flow call)."""
    value = args.prefect_start_timeout
    if value is None:
        value = int(os.environ.get(PREFECT_TIMEOUT_SETTING) or DEFAULT_PREFECT_START_TIMEOUT)
    if value < 1:
        raise LmopsError("--prefect-start-timeout must be at least 1 second")
    os.environ[PREFECT_TIMEOUT_SETTING] = str(value)
    return value


def _run_flow(flow, timeout: int, **kwargs):
    """Call `flow` with the ephemeral server's start timeout set; its timeout error becomes one line
    that says what to do."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: timeout}):
            return flow(**kwargs)
    except RuntimeError as err:
        if "ephemeral Prefect API server" not in str(err):
            raise
        raise LmopsError(f"the temporary Prefect server did not start within {timeout} s (a loaded machine?): rerun "
                         "with a longer --prefect-start-timeout (or $PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS), "
                         "or start a server once (`prefect server start`) and set PREFECT_API_URL to it") from None


def _add_start_timeout(p) -> None:
    p.add_argument("--prefect-start-timeout", type=int, default=None, metavar="SECONDS",
                   help=f"how long to wait for the temporary Prefect server to start (default "
                   f"${PREFECT_TIMEOUT_SETTING} or {DEFAULT_PREFECT_START_TIMEOUT})")


def _stop_children_on_sigterm() -> None:
    """SIGTERM (a timeout, `kill PID`) unwinds like Ctrl-C, so the scenario's worker and model
    server are stopped by its `finally`."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _dvc_params_only(args, command: str) -> None:
    """The pipeline's stages are DVC stages, and dvc.yaml reads params.yaml: another file would be
    validated here and then silently not used, so it is refused in one line saying what to do."""
    if Path(args.params) != Path("params.yaml"):
        raise LmopsError(f"`lmops {command}` runs dvc.yaml's stages, which read params.yaml, not {args.params}: "
                         f"copy it to params.yaml, or change single keys with `dvc exp run -S key=value`")


def add_run(sub) -> None:
    def run(args) -> None:
        from lmops.runlock import note_flow_run, run_lock

        _dvc_params_only(args, "run")
        params_of(args)  # fail on bad params before starting Prefect
        timeout = _prefect_start_timeout(args)
        root = Path(args.root).resolve()
        with run_lock(root):  # one run per project: a second fails here, in one line naming this one
            from flows.pipeline import lmops_pipeline

            _stop_children_on_sigterm()
            flow = lmops_pipeline.with_options(on_running=[lambda f, run, s: note_flow_run(root, str(run.id))])
            _run_flow(flow, timeout, project=str(root), push_data=not args.no_push, scenario=not args.no_scenario)

    p = sub.add_parser("run", help="run the whole pipeline as the Prefect flow `lmops-pipeline` "
                       "(the DVC stages, then the closed-loop scenario)")
    p.add_argument("--no-push", action="store_true", help="skip pushing data to the DVC remote")
    p.add_argument("--no-scenario", action="store_true", help="skip the closed-loop scenario (metrics/drift.json)")
    _add_start_timeout(p)
    p.set_defaults(func=run)


def add_pretrain(sub) -> None:
    def pretrain(args) -> None:
        _dvc_params_only(args, "pretrain")
        params_of(args)
        timeout = _prefect_start_timeout(args)
        from flows.pretrain import pretrain as flow

        _run_flow(flow, timeout, project=str(Path(args.root).resolve()))

    p = sub.add_parser("pretrain", help="train the base checkpoint from scratch (the `pretrain` params section)")
    _add_start_timeout(p)
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

        print(json.dumps(scenario(project=str(Path(args.root).resolve()), params=args.params), indent=2, default=str))

    p = sub.add_parser("scenario", help="play the closed loop (traffic, drift, event-triggered retraining, promotion) "
                       "as the Prefect flow `lmops-scenario` against PREFECT_API_URL; writes metrics/drift.json")
    p.set_defaults(func=run_scenario)
