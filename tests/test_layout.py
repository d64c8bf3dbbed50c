"""Cheap guards: one name per idea across dvc.yaml, params.yaml, the CLI and the deployments."""
import subprocess
import sys

import yaml

from lmops.cli import build_parser
from lmops.params import Params, load_params
from lmops.stages import STAGES
from tests.conftest import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_dvc_stage_has_a_params_section_and_a_cli_stage():
    params = load_params(ROOT / "params.yaml")
    for name, stage in DVC["stages"].items():
        assert stage["cmd"] == f"lmops stage {name}"
        assert name in STAGES
        assert name in Params.model_fields and getattr(params, name) is not None
        assert name in stage.get("params", []), f"stage {name} must depend on its own params section"


def test_every_stage_depends_on_its_inputs_and_declares_outputs():
    for name, stage in DVC["stages"].items():
        assert stage.get("deps"), name
        assert stage.get("outs") or stage.get("metrics"), name


def test_help_works_for_every_command():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        out = subprocess.run([sys.executable, "-m", "lmops.cli", name, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage:" in out.stdout, name


def test_bad_params_fail_before_any_work(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  stepz: 3\n")
    out = subprocess.run([sys.executable, "-m", "lmops.cli", "--root", str(tmp_path), "stage", "data"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "train.stepz" in out.stderr
    assert not (tmp_path / "data").exists()


def test_deployments_point_at_real_flows():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    for dep in spec["deployments"]:
        path, func = dep["entrypoint"].split(":")
        assert f"def {func}(" in (ROOT / path).read_text()
        assert dep["schedules"] and dep["work_pool"]["name"]
    from deployments.serve import deployments

    assert [d.name for d in deployments()] == ["weekly"]
