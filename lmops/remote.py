"""The DVC remote, off the laptop: push and pull the pipeline's outputs through `dvc push`/`dvc pull`
(an S3 bucket, GCS, SSH or a local directory: whatever `.dvc/config` names), with bounded retries and
one-line errors.

- A transient failure (endpoint unreachable, timeout) is retried `tries` times, `delay` seconds apart;
  a missing bucket or rejected credentials is not retried. Either way the error is one line naming the
  remote and its URL (RemoteError); local outputs are never touched by a failed push, and a failed pull
  only ever adds complete, hash-named objects to the cache.
- A `dvc pull` killed halfway leaves no output a later run would trust: DVC writes each cache object to
  a temporary name and renames it once complete, and checks an output out only from complete objects,
  so `dvc status` reports what is missing and the next pull finishes the job.
- A push killed halfway leaves the remote consistent: objects are content-addressed (a new version never
  overwrites an old one's bytes) and a version only exists for others once its dvc.lock is pushed to git,
  which `push_then_git` does after the objects are all on the remote.

`lmops remote push|pull|fetch [--remote NAME] [TARGET ...]` runs the same from a shell.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lmops.errors import LmopsError


class RemoteError(LmopsError, RuntimeError):
    """A DVC remote that cannot be reached, lacks its bucket or refuses the credentials; one line."""


# Substrings of DVC/botocore/gcsfs messages -> (what went wrong, retry?)
_CAUSES: list[tuple[tuple[str, ...], str, bool]] = [
    (("NoSuchBucket", "bucket does not exist", "Bucket not found", "bucket not found"), "the bucket does not exist", False),
    (("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Access Denied", "Forbidden",
      "Unable to locate credentials", "NoCredentialsError", "invalid_grant", "401"), "the credentials were refused", False),
    (("Could not connect", "Connection refused", "EndpointConnectionError", "Cannot connect to host",
      "timed out", "Timeout", "Name or service not known", "ConnectionError", "unreachable"),
     "the endpoint is unreachable", True),
]


@dataclass(frozen=True)
class Remote:
    name: str
    url: str

    def __str__(self) -> str:
        return f"DVC remote '{self.name}' ({self.url})"


def _bin(tool: str) -> str:
    local = Path(sys.executable).parent / tool
    return str(local) if local.exists() else tool


def _run(args: list[str], project: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, **(env or {}), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run([_bin("dvc"), *args], cwd=project, env=env, capture_output=True, text=True)


def remote_of(project: str | Path, name: str | None = None) -> Remote:
    """The named remote, or the project's default one (`dvc remote default`)."""
    project = Path(project)
    if name is None:
        proc = _run(["remote", "default"], project)
        name = proc.stdout.strip()
        if proc.returncode or not name:
            raise RemoteError(f"{project} has no default DVC remote: `dvc remote add -d NAME URL` first")
    # `dvc config` prints the bare URL; `dvc remote list` wraps its table to the terminal's width
    proc = _run(["config", f"remote.{name}.url"], project)
    url = proc.stdout.strip()
    if proc.returncode or not url:
        raise RemoteError(f"{project} has no DVC remote named {name!r} (`dvc remote list`)")
    return Remote(name, url)


def cause(output: str) -> tuple[str, bool]:
    """(one-line cause, transient?) of a failed DVC transfer, from its output."""
    for needles, what, transient in _CAUSES:
        if any(n in output for n in needles):
            return what, transient
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith(("  ", "Traceback"))]
    last = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no output")
    return last.removeprefix("ERROR: ")[:300], False


def transfer(op: str, project: str | Path, targets: list[str] | None = None, remote: str | None = None,
             tries: int = 3, delay: float = 2.0, jobs: int | None = None, env: dict | None = None,
             all_tags: bool = False) -> str:
    """`dvc push` or `dvc pull` (op) of `targets` (default: every output in dvc.lock and .dvc files);
    with `all_tags`, of every tagged commit too (`-T`: the registry's registration commits)."""
    if op not in ("push", "pull", "fetch"):
        raise ValueError(f"unknown DVC transfer {op!r}")
    project = Path(project)
    rem = remote_of(project, remote)
    args = [op, "-r", rem.name, *(["-j", str(jobs)] if jobs else []), *(["-T"] if all_tags else []), *(targets or [])]
    for attempt in range(1, max(1, tries) + 1):
        proc = _run(args, project, env)
        if proc.returncode == 0:
            return proc.stdout + proc.stderr
        what, transient = cause(proc.stdout + proc.stderr)
        if not transient or attempt >= tries:
            raise RemoteError(f"dvc {op} {'to' if op == 'push' else 'from'} {rem} failed after "
                              f"{attempt} {'try' if attempt == 1 else 'tries'}: {what}")
        time.sleep(delay * attempt)
    raise AssertionError("unreachable")


def push(project: str | Path, targets: list[str] | None = None, **kw) -> str:
    return transfer("push", project, targets, **kw)


def pull(project: str | Path, targets: list[str] | None = None, **kw) -> str:
    return transfer("pull", project, targets, **kw)


def push_then_git(project: str | Path, git_remote: str = "origin", branch: str | None = None,
                  tags: bool = True, **kw) -> None:
    """Every DVC output to the DVC remote, then the commit (dvc.lock) and, with `tags`, the GTO tags
    to git: others see a version only once all its bytes are on the DVC remote."""
    project = Path(project)
    push(project, **kw)
    ref = branch or subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=project, capture_output=True,
                                   text=True, check=True).stdout.strip()
    for args in (["push", "-q", git_remote, ref], *([["push", "-q", git_remote, "--tags"]] if tags else [])):
        proc = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True)
        if proc.returncode:
            raise RemoteError(f"git {' '.join(args)} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def push_registry(project: str | Path, name: str, git_remote: str = "origin", **kw) -> str:
    """Every registered version of model `name` to the DVC remote (the objects of `registry/<name>.dvc` in
    each tagged registration commit: `dvc push -T`), then the GTO tags to git: another clone then gets any
    version with `lmops models get NAME@VERSION`, and `lmops serve` finds its champion after `dvc pull`."""
    from lmops.registry.gto_registry import REGISTRY_OUT

    project = Path(project)
    out = push(project, [f"{REGISTRY_OUT}/{name}.dvc"], all_tags=True, **kw)
    proc = subprocess.run(["git", "push", "-q", git_remote, "--tags"], cwd=project, capture_output=True, text=True)
    if proc.returncode:
        raise RemoteError(f"git push {git_remote} --tags failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return out
