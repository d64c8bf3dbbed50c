"""The model registry: GTO git tags are the record, a content-addressed local store holds the bytes.

Why GTO: versions (`NAME@v0.0.3`) and aliases (`NAME#champion#7`) are annotated git tags, so
`gto show`, `gto history`, `dvc artifacts get` and DVC Studio read the same registry we write.
The artifact itself is declared in the `artifacts:` section of `dvc.yaml`.

- A version's lineage (DVC data hash, params, parent version, metrics, model hash) is the JSON
  message of its registration tag: `git tag -n1 'lmops-model@*'` shows it.
- Each registration tags its own commit: a commit object with HEAD's tree and HEAD as parent,
  made with `git commit-tree` and reachable only through the tag. No branch moves and the
  working tree and index are untouched, so registering never races a running `dvc repro`.
- Aliases are GTO stages. GTO orders assignments by their tag time, which has one-second
  resolution, so `promote` waits for the next second when needed: `gto show` and we agree.
- The model directory is copied to `<store>/<name>/<model hash>/` at registration, because the
  pipeline overwrites `models/base` on the next run and a rollback needs the old bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lmops.io import InputError, atomic_dir

ALIASES = ("champion", "challenger")
REGISTRY_OUT = "registry"  # in a registration commit only: registry/<name>.dvc tracks the version's bytes
ROLLBACK = "rollback"  # first word of the tag message of an assignment made by `rollback`


@dataclass
class Lineage:
    """Where a model version came from. Stored as the registration tag's message."""
    data_hash: str = ""  # DVC md5 of the training data (dvc.lock), or our hash of the directory
    params: dict = field(default_factory=dict)
    parent: str | None = None  # the version this one was fine-tuned or quantized from
    metrics: dict = field(default_factory=dict)
    model_hash: str = ""  # filled in by `register`: the key of the stored bytes
    dvc_model_hash: str = ""  # dvc.lock's md5 of the model when it is a pipeline output (`dvc checkout`)
    variant: str = "full"  # "full", or a quantization method name
    source: str = ""  # the directory it was registered from
    created_at: str = ""


@dataclass
class ModelVersion:
    name: str
    version: str
    commit: str
    lineage: Lineage
    path: Path  # the stored model directory (a Hugging Face directory)
    aliases: list[str] = field(default_factory=list)


def dir_hash(path: str | Path) -> str:
    """md5 over the relative paths and bytes of every file: equal directories, equal hashes."""
    path = Path(path)
    h = hashlib.md5()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def dvc_out_hash(root: Path, out: str) -> str | None:
    """The md5 that dvc.lock records for output `out`, if a stage produces it."""
    import yaml

    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for o in stage.get("outs", []):
            if o.get("path") == out:
                return o.get("md5")
    return None


def data_hash(root: Path, corpus: str = "data/corpus") -> str:
    """DVC's hash of the training data when dvc.lock has it, else our hash of the directory."""
    found = dvc_out_hash(root, corpus)
    if found:
        return found
    return f"dir:{dir_hash(root / corpus)}" if (root / corpus).is_dir() else ""


def lineage_for(root: Path, metrics: dict | None = None, parent: str | None = None, variant: str = "full",
                params: dict | None = None, corpus: str = "data/corpus") -> Lineage:
    """Lineage of a model built in project `root`: its data hash and params.yaml (or `params`)."""
    import yaml

    if params is None:
        path = Path(root) / "params.yaml"
        params = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    return Lineage(data_hash=data_hash(Path(root), corpus), params=params, parent=parent,
                   metrics=dict(metrics or {}), variant=variant)


def _git(root: Path, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode:
        raise InputError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip()}")
    return proc.stdout.strip()


class Registry:
    """GTO-backed registry of one project repository. `store` is relative to `root`."""

    def __init__(self, root: str | Path = ".", store: str | Path = ".lmops/registry"):
        self.root = Path(root).resolve()
        self.store = self.root / store
        if subprocess.run(["git", "-C", str(self.root), "rev-parse", "HEAD"], capture_output=True).returncode:
            raise InputError(f"{self.root} is not a git repository with a commit: the model registry keeps "
                             "its versions as git tags (run `git init` and commit first)")
        # Who signs the tags: the repo's git identity, or "lmops" on a machine without one (CI).
        name = subprocess.run(["git", "-C", str(self.root), "config", "user.name"], capture_output=True, text=True)
        email = subprocess.run(["git", "-C", str(self.root), "config", "user.email"], capture_output=True, text=True)
        self.author = (name.stdout.strip() or "lmops", email.stdout.strip() or "lmops@localhost")

    # ---- writing -------------------------------------------------------------------------------
    def register(self, name: str, model_dir: str | Path, lineage: Lineage | None = None) -> ModelVersion:
        """Store `model_dir`, tag a new version with its lineage, and return it."""
        from gto import api

        from lmops.model.build import check_model_dir

        model_dir = check_model_dir(model_dir)
        lineage = lineage or Lineage()
        lineage.model_hash = dir_hash(model_dir)
        lineage.source = lineage.source or str(model_dir)
        if model_dir.resolve().is_relative_to(self.root):  # a pipeline output: DVC's cache has it too
            lineage.dvc_model_hash = dvc_out_hash(self.root, str(model_dir.resolve().relative_to(self.root))) or ""
        lineage.created_at = datetime.now(UTC).isoformat(timespec="seconds")
        if lineage.parent and self.get(name, lineage.parent) is None:
            raise InputError(f"parent version {name}@{lineage.parent} is not registered")
        stored = self.store / name / lineage.model_hash
        if not stored.is_dir():
            with atomic_dir(stored) as tmp:
                shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        who = {"GIT_AUTHOR_NAME": self.author[0], "GIT_AUTHOR_EMAIL": self.author[1],
               "GIT_COMMITTER_NAME": self.author[0], "GIT_COMMITTER_EMAIL": self.author[1]}
        tree = self._registration_tree(name, stored)
        commit = _git(self.root, "commit-tree", tree, "-p", "HEAD",
                      "-m", f"lmops registry: register {name} ({lineage.model_hash[:8]})", env=who)
        tag = api.register(self.root, name, ref=commit, message=json.dumps(asdict(lineage), sort_keys=True),
                           author=self.author[0], author_email=self.author[1])
        return self.get(name, tag.version)

    def _registration_tree(self, name: str, stored: Path) -> str:
        """The tree of a registration commit: HEAD's tree, plus (in a DVC project) the version's bytes
        as a DVC-tracked directory `registry/<name>` (`registry/<name>.dvc`, objects in the DVC cache)
        and a dvc.yaml whose `artifacts:` entry points there, so `dvc artifacts get . NAME --rev TAG`
        (or `--stage champion`) returns this version's bytes, not HEAD's `models/base`."""
        if not (self.root / ".dvc").is_dir():
            return _git(self.root, "rev-parse", "HEAD^{tree}")  # no DVC: GTO tags and the store only
        import tempfile

        import yaml

        out = f"{REGISTRY_OUT}/{name}"
        dvc_file = yaml.safe_dump({"outs": [{**_dvc_cache_dir(self.root, stored), "path": name}]}, sort_keys=False)
        try:
            spec = yaml.safe_load(_git(self.root, "show", "HEAD:dvc.yaml")) or {}
        except InputError:
            spec = {}
        entry = {"type": "model", **(spec.get("artifacts") or {}).get(name, {}), "path": out}
        spec["artifacts"] = {**(spec.get("artifacts") or {}), name: entry}
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            _git(self.root, "read-tree", "HEAD", env=env)
            for path, text in (("dvc.yaml", yaml.safe_dump(spec, sort_keys=False)), (f"{out}.dvc", dvc_file)):
                blob = Path(tmp) / "blob"
                blob.write_text(text)
                sha = _git(self.root, "hash-object", "-w", str(blob))
                _git(self.root, "update-index", "--add", "--cacheinfo", f"100644,{sha},{path}", env=env)
            return _git(self.root, "write-tree", env=env)

    def promote(self, name: str, version: str, alias: str = "champion", message: str = "") -> ModelVersion:
        """Point `alias` at `version` (a new GTO stage assignment; the old ones stay as history)."""
        from gto import api

        if alias not in ALIASES:
            raise InputError(f"unknown alias {alias!r}; aliases are: {', '.join(ALIASES)}")
        found = self.get(name, version)
        if found is None:
            known = ", ".join(v.version for v in self.versions(name)) or "none"
            raise InputError(f"{name}@{version} is not registered (registered versions: {known})")
        self._wait_for_next_second(name)
        api.assign(self.root, name, alias, version=version, force=True, author=self.author[0],
                   author_email=self.author[1], message=message or f"promote {name} {version} to {alias}")
        return self.get(name, version)

    def rollback(self, name: str, alias: str = "champion") -> ModelVersion:
        """Point `alias` back at the version it had before the current one."""
        stack = self._alias_stack(name, alias)
        if len(stack) < 2:
            raise InputError(f"{name} has no earlier {alias} to roll back to")
        return self.promote(name, stack[-2], alias, message=f"{ROLLBACK}: {alias} {stack[-1]} -> {stack[-2]}")

    # ---- reading -------------------------------------------------------------------------------
    def _events(self, name: str) -> list[dict]:
        from gto import api
        from gto.exceptions import ArtifactNotFound

        try:
            # versions_per_stage=-1: superseded assignments too, which rollback needs.
            return api.show(self.root, name, versions_per_stage=-1, assignments_per_version=-1)
        except ArtifactNotFound:  # never registered: no versions
            return []

    def versions(self, name: str, events: list[dict] | None = None) -> list[ModelVersion]:
        """Every registered version of `name`, oldest first, with the aliases each holds now."""
        events = self._events(name) if events is None else events
        current = {alias: _current(events, alias) for alias in ALIASES}
        out = []
        for v in events:
            regs = v.get("registrations") or []
            if not regs:
                continue
            lineage = _lineage(regs[-1]["message"])
            out.append(ModelVersion(name=name, version=v["version"], commit=v["commit_hexsha"], lineage=lineage,
                                    path=self.store / name / lineage.model_hash,
                                    aliases=[a for a, ver in current.items() if ver == v["version"]]))
        return sorted(out, key=lambda m: tuple(int(x) for x in m.version.lstrip("v").split(".")))

    def get(self, name: str, version: str) -> ModelVersion | None:
        return next((v for v in self.versions(name) if v.version == version), None)

    def _alias_stack(self, name: str, alias: str) -> list[str]:
        return _stack(self._events(name), alias)

    def alias_version(self, name: str, alias: str = "champion") -> str | None:
        return _current(self._events(name), alias)

    def resolve(self, name: str, alias: str = "champion") -> ModelVersion | None:
        """The version `alias` points at, with its stored model directory; None if unassigned."""
        events = self._events(name)  # one read of the tags: this runs on every hot-reload poll
        version = _current(events, alias)
        if version is None:
            return None
        found = next((v for v in self.versions(name, events) if v.version == version), None)
        if found is not None and not found.path.is_dir():
            raise InputError(f"{name}@{version} is registered but its model files are missing from {found.path} "
                             "(the local registry store); re-register the model directory")
        return found

    def _wait_for_next_second(self, name: str) -> None:
        """GTO sorts stage tags by creation time in whole seconds; keep ours strictly increasing."""
        events = self._events(name)
        times = [a["created_at"] for alias in ALIASES for a in _assignments(events, alias)]
        if times:
            last = max(times).timestamp()
            while time.time() < int(last) + 1:
                time.sleep(0.05)


def _dvc_cache_dir(root: Path, directory: Path) -> dict:
    """Put `directory` into the DVC cache of the project at `root`; its .dvc `outs` entry (no path)."""
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.transfer import transfer

    with Repo(str(root)) as repo:
        odb = repo.cache.local
        staging, meta, obj = build(odb, str(directory), odb.fs, "md5")
        transfer(staging, odb, {obj.hash_info}, shallow=False, hardlink=False)
    return {"md5": obj.hash_info.value, "size": meta.size, "nfiles": meta.nfiles, "hash": "md5"}


def _lineage(message: str | None) -> Lineage:
    """The lineage in a registration tag's message; a version registered by hand with `gto register`
    has free text there, and gets an empty lineage rather than breaking the listing."""
    try:
        raw = json.loads(message or "{}")
    except ValueError:
        raw = {}
    return Lineage(**{k: v for k, v in raw.items() if k in Lineage.__dataclass_fields__}) \
        if isinstance(raw, dict) else Lineage()


def _assignments(events: list[dict], alias: str) -> list[dict]:
    """Every assignment of `alias` in GTO's `show` output, in the order they were made."""
    rows = [a for v in events for s in v.get("stages") or [] if s["stage"] == alias for a in s["assignments"]]
    # The tag counter (`name#alias#N`) is strictly increasing, so it orders same-second tags too.
    return sorted(rows, key=lambda a: int(a["tag"].rsplit("#", 1)[1]))


def _stack(events: list[dict], alias: str) -> list[str]:
    """The alias' history with rolled-back entries popped: the last item is the current version."""
    stack: list[str] = []
    for a in _assignments(events, alias):
        if (a.get("message") or "").startswith(ROLLBACK) and len(stack) >= 2:
            stack.pop()
        elif not stack or stack[-1] != a["version"]:
            stack.append(a["version"])
    return stack


def _current(events: list[dict], alias: str) -> str | None:
    stack = _stack(events, alias)
    return stack[-1] if stack else None
