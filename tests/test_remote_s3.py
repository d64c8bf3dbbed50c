"""Item 1 of the scale-out: the DVC remote on (loopback) S3. Push from one clone, pull into a fresh
clone of the git remote, compare bytes; bad remotes give one line naming the remote; an interrupted
pull leaves nothing a later run would trust."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lmops.errors import LmopsError
from lmops.remote import RemoteError, pull, push, push_then_git
from tests.project import BIN, ENV, dvc, make_project, sh

FAST = ("evaluate", "prompts", "quantize", "long_context")  # data + train: enough bytes to move


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def s3_remote(project: Path, s3, bucket: str, name: str = "s3") -> str:
    url = s3.bucket(bucket) + "/dvc"
    dvc(["remote", "add", "-f", "-d", name, url], project)
    dvc(["remote", "modify", name, "endpointurl", s3.endpoint], project)  # no secret: credentials come from env
    return url


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, s3):
    """A project that ran data + train, pushed to S3 (DVC) and to a bare git remote."""
    base = tmp_path_factory.mktemp("scale")
    proj = make_project(base / "proj", skip=FAST)
    bare = base / "origin.git"
    sh(["git", "init", "-q", "--bare", str(bare)], base)
    sh(["git", "remote", "add", "origin", str(bare)], proj)
    s3_remote(proj, s3, "lmops-dvc")
    os.environ.update(s3.env)  # the dvc children inherit the credentials; params.yaml holds none
    dvc(["repro"], proj)
    sh(["git", "add", "-A"], proj)
    sh(["git", "commit", "-qm", "run"], proj)
    push_then_git(proj)
    return proj, bare


def test_push_then_pull_into_fresh_clone(pushed, s3, tmp_path):
    proj, bare = pushed
    keys = s3.keys("lmops-dvc", "dvc/")
    assert keys and all(k.startswith("dvc/files/md5/") for k in keys)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(bare), str(clone)], tmp_path)
    assert not (clone / "models" / "base").exists()
    pull(clone)
    for out in ("data/corpus", "models/base"):
        assert tree_hashes(clone / out) == tree_hashes(proj / out), out
    assert "up to date" in dvc(["status"], clone).lower() or "Data and pipelines are up to date" in dvc(["status"], clone)


@pytest.mark.parametrize("case", ["unreachable", "credentials", "bucket"])
def test_bad_remote_is_one_line_naming_it(pushed, s3, tmp_path, case):
    proj, _ = pushed
    before = tree_hashes(proj / "models" / "base")
    name = f"bad-{case}"
    if case == "unreachable":
        from tests.s3 import free_port

        dvc(["remote", "add", "-f", name, "s3://lmops-dvc/dvc"], proj)
        dvc(["remote", "modify", name, "endpointurl", f"http://127.0.0.1:{free_port()}"], proj)
        dvc(["remote", "modify", name, "connect_timeout", "2"], proj)
    elif case == "credentials":  # a second moto server with authentication on: it knows no access key
        from tests.s3 import free_port

        port = free_port()
        strict = subprocess.Popen([os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                  env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from deployments.up import wait_http

        wait_http(f"http://127.0.0.1:{port}/moto-api/", 60, strict)
        dvc(["remote", "add", "-f", name, "s3://lmops-dvc/dvc"], proj)
        dvc(["remote", "modify", name, "endpointurl", f"http://127.0.0.1:{port}"], proj)
    else:
        dvc(["remote", "add", "-f", name, "s3://lmops-no-such-bucket/dvc"], proj)
        dvc(["remote", "modify", name, "endpointurl", s3.endpoint], proj)
    try:
        start = time.monotonic()
        with pytest.raises(RemoteError) as err:
            push(proj, remote=name, tries=2, delay=0.2)
        msg = str(err.value)
        assert isinstance(err.value, LmopsError) and "\n" not in msg and f"'{name}'" in msg, msg
        assert {"unreachable": "unreachable", "credentials": "credentials were refused",
                "bucket": "bucket does not exist"}[case] in msg, msg
        assert "2 tries" in msg if case == "unreachable" else "1 try" in msg
        assert time.monotonic() - start < 120
        assert tree_hashes(proj / "models" / "base") == before  # local outputs untouched
    finally:
        dvc(["remote", "remove", name], proj)
        if case == "credentials":
            strict.terminate()
            strict.wait(10)


def test_interrupted_pull_is_never_trusted(pushed, tmp_path):
    """Kill `dvc pull` at a few points; each time, either an output is complete (its hash matches
    dvc.lock) or `dvc status` reports it, and a second pull completes everything."""
    proj, bare = pushed
    expected = tree_hashes(proj / "models" / "base")
    for delay in (0.5, 2.5):
        clone = tmp_path / f"clone-{delay}"
        sh(["git", "clone", "-q", str(bare), str(clone)], tmp_path)
        proc = subprocess.Popen([os.path.join(BIN, "dvc"), "pull"], cwd=clone, env={**ENV, **os.environ},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = subprocess.run([os.path.join(BIN, "dvc"), "status", "--json"], cwd=clone, env={**ENV, **os.environ},
                                capture_output=True, text=True).stdout
        if (clone / "models" / "base").exists() and tree_hashes(clone / "models" / "base") != expected:
            assert "train" in status, f"a partial models/base is not reported by dvc status: {status}"
        pull(clone)
        assert tree_hashes(clone / "models" / "base") == expected
