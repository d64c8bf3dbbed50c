"""Every error lmops raises on purpose derives from LmopsError, and the CLI prints it as one line."""
from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import ROOT


def test_every_exception_class_derives_from_lmops_error():
    import importlib

    from lmops.errors import LmopsError

    classes = []
    for path in sorted((ROOT / "lmops").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and node.name != "LmopsError":
                rel = path.relative_to(ROOT).with_suffix("")
                module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
                classes.append((module, node.name))
    errors = []
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        if isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, LmopsError):
            errors.append(f"{module}.{name}")
    assert not errors, f"exception classes outside LmopsError: {errors}"


def test_cli_turns_an_lmops_error_into_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  base: /nonexistent/model\n")
    out = subprocess.run([sys.executable, "-m", "lmops.cli", "--root", str(tmp_path), "stage", "evaluate"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("lmops: error:")]
    assert len(lines) == 1, out.stderr[-2000:]


def test_run_refuses_a_params_file_its_dvc_stages_would_not_read(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text((ROOT / "params.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "lmops.cli", "--root", str(ROOT), "--params", str(other), "run"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "read params.yaml" in out.stderr and str(other) in out.stderr


def test_remote_command_without_a_remote_is_one_line(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "lmops.cli", "--root", str(tmp_path), "remote", "push"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("lmops: error:")]
    assert len(errors) == 1 and "has no default DVC remote" in errors[0], out.stderr[-2000:]
