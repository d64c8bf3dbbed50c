"""The GTO-backed model registry, in a temporary git repository."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lmops.io import InputError
from lmops.registry import Lineage, Registry

NAME = "lmops-model"


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "init"], check=True)
    return path


def fake_model(path: Path, tag: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"tag": tag}))
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    return git_repo(tmp_path / "repo")


def test_register_records_lineage_in_git_tags(repo, tmp_path):
    reg = Registry(repo)
    v1 = reg.register(NAME, fake_model(tmp_path / "m1", "a"),
                      Lineage(data_hash="abc123", params={"train": {"steps": 3}}, metrics={"kb_qa_exact_match": 0.4}))
    v2 = reg.register(NAME, fake_model(tmp_path / "m2", "b"), Lineage(parent=v1.version))
    assert (v1.version, v2.version) == ("v0.0.1", "v0.0.2")
    assert v2.lineage.parent == "v0.0.1" and v1.lineage.metrics == {"kb_qa_exact_match": 0.4}
    assert v1.lineage.model_hash != v2.lineage.model_hash
    # The stored copy survives the source directory being overwritten (as `dvc repro train` does).
    (tmp_path / "m1" / "config.json").write_text("{}")
    assert json.loads((reg.get(NAME, "v0.0.1").path / "config.json").read_text()) == {"tag": "a"}
    # Lineage is plain git: the registration tag's message, readable without lmops.
    msg = subprocess.run(["git", "-C", str(repo), "tag", "-l", "--format=%(contents)", f"{NAME}@v0.0.1"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(msg)["data_hash"] == "abc123"
    # No branch moved and the working tree is untouched.
    assert subprocess.run(["git", "-C", str(repo), "rev-list", "--count", "HEAD"], capture_output=True,
                          text=True).stdout.strip() == "1"


def test_promote_and_rollback_agree_with_gto(repo, tmp_path):
    from gto import api

    reg = Registry(repo)
    for i in range(3):
        reg.register(NAME, fake_model(tmp_path / f"m{i}", str(i)))
    assert reg.resolve(NAME) is None
    for v in ("v0.0.1", "v0.0.2", "v0.0.3"):
        reg.promote(NAME, v)
    reg.promote(NAME, "v0.0.3", alias="challenger")
    assert reg.alias_version(NAME) == "v0.0.3"
    assert reg.rollback(NAME).version == "v0.0.2"
    assert reg.rollback(NAME).version == "v0.0.1"  # a second rollback goes further back, not forth
    with pytest.raises(InputError, match="no earlier champion"):
        reg.rollback(NAME)
    # `gto show` (what DVC Studio reads) sees the same aliases.
    state = api.show(repo)[NAME]["stage"]
    assert state == {"champion": "v0.0.1", "challenger": "v0.0.3"}
    assert {v.version: v.aliases for v in reg.versions(NAME)}["v0.0.3"] == ["challenger"]
    assert reg.resolve(NAME).path.is_dir()
    # A version registered by hand with gto (free-text message) is listed, with an empty lineage.
    api.register(repo, NAME, ref="HEAD", message="registered by hand")
    assert reg.versions(NAME)[-1].version == "v0.0.4" and reg.versions(NAME)[-1].lineage.parent is None


def test_pipeline_output_records_the_dvc_hash(repo):
    fake_model(repo / "models" / "base", "dvc")
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages:\n  train:\n    cmd: lmops stage train\n    outs:\n"
                                   "    - path: models/base\n      md5: 0123abcd.dir\n  data:\n    cmd: x\n"
                                   "    outs:\n    - path: data/corpus\n      md5: feed.dir\n")
    from lmops.registry import lineage_for

    v = Registry(repo).register(NAME, repo / "models" / "base", lineage_for(repo))
    assert v.lineage.dvc_model_hash == "0123abcd.dir" and v.lineage.data_hash == "feed.dir"


def test_bad_inputs(repo, tmp_path):
    reg = Registry(repo)
    with pytest.raises(InputError, match="config.json"):
        reg.register(NAME, tmp_path / "missing")
    with pytest.raises(InputError, match="parent version"):
        reg.register(NAME, fake_model(tmp_path / "m", "x"), Lineage(parent="v9.9.9"))
    with pytest.raises(InputError, match="not registered"):
        reg.promote(NAME, "v0.0.7")
    with pytest.raises(InputError, match="unknown alias"):
        reg.promote(NAME, "v0.0.1", alias="production")
    with pytest.raises(InputError, match="not a git repository"):
        Registry(tmp_path / "m")


def test_models_cli(repo, tmp_path, capsys):
    from lmops.cli import main

    model = fake_model(tmp_path / "m", "cli")
    (repo / "params.yaml").write_text("serve: {model: lmops-model}\n")
    assert main(["--root", str(repo), "models", "register", NAME, str(model)]) == 0
    assert main(["--root", str(repo), "models", "promote", NAME, "v0.0.1", "--alias", "champion"]) == 0
    assert main(["--root", str(repo), "models", "list"]) == 0
    out = capsys.readouterr().out
    assert "v0.0.1" in out and "champion" in out
    assert main(["--root", str(repo), "models", "rollback", NAME]) == 2  # nothing earlier: a clear error
    assert "no earlier champion" in capsys.readouterr().err


def test_dvc_artifacts_get_returns_the_registered_versions_bytes(tmp_path):
    """`dvc artifacts get . lmops-model --rev vX` / `--stage champion` resolve to that version's own
    bytes (a DVC-tracked copy in its registration commit), not to HEAD's models/base; checked by hash."""
    import hashlib
    import os
    import sys

    from lmops.registry.gto_registry import dir_hash

    repo = git_repo(tmp_path / "proj")
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1"}
    dvc = os.path.join(bindir, "dvc")
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True, env=env)
    (repo / "dvc.yaml").write_text(f"artifacts:\n  {NAME}:\n    path: models/base\n    type: model\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dvc"],
                   check=True)
    reg = Registry(repo)
    base = repo / "models" / "base"
    hashes = {}
    for tag in ("first", "second"):
        shutil_rmtree(base)
        fake_model(base, tag)
        (base / "model.safetensors").write_bytes(hashlib.sha256(tag.encode()).digest() * 1000)
        v = reg.register(NAME, base)
        hashes[v.version] = (dir_hash(v.path), hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest())
    reg.promote(NAME, "v0.0.1")
    for how, want in ((["--rev", "v0.0.1"], "v0.0.1"), (["--rev", "v0.0.2"], "v0.0.2"), (["--stage", "champion"], "v0.0.1")):
        out = tmp_path / f"got-{'-'.join(how)}"
        proc = subprocess.run([dvc, "artifacts", "get", ".", NAME, *how, "-o", str(out)], cwd=repo, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        got = (dir_hash(out), hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest())
        assert got == hashes[want], how  # the version's bytes, not models/base (= v0.0.2)
    # The working tree, index and HEAD's dvc.yaml are untouched by registering.
    assert "models/base" in (repo / "dvc.yaml").read_text()
    assert subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "dvc.yaml"], capture_output=True,
                          text=True).stdout == ""


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
