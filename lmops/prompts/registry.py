"""The prompt registry: every prompt version with its spec, rendered template and scores, plus
aliases (`production`, `candidate`) that point at versions. Stored as one indented JSON file so a
diff in review shows exactly which prompt changed and why."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from lmops.io import InputError, read_json, write_json

ALIASES = ("production", "candidate")


@dataclass
class PromptRegistry:
    path: Path
    data: dict

    @classmethod
    def open(cls, path: str | Path) -> "PromptRegistry":
        """Open the registry file, or start an empty one if it does not exist yet."""
        path = Path(path)
        if not path.exists():
            return cls(path, {"prompts": {}})
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("prompts"), dict):
            raise InputError(f"{path} is not a prompt registry (expected a top-level 'prompts' mapping)")
        return cls(path, data)

    def save(self) -> None:
        write_json(self.path, self.data)

    def _entry(self, name: str) -> dict:
        if name not in self.data["prompts"]:
            known = ", ".join(self.data["prompts"]) or "none"
            raise InputError(f"no prompt named {name!r} in {self.path} (registered: {known})")
        return self.data["prompts"][name]

    def register(self, name: str, spec: dict, template: str, scores: dict, source: str) -> int:
        """Record a version and return its number; an identical spec updates that version's scores."""
        entry = self.data["prompts"].setdefault(name, {"versions": [], "aliases": {}})
        for v in entry["versions"]:
            if v["spec"] == spec:
                v["scores"].update(scores)
                return v["version"]
        version = len(entry["versions"]) + 1
        entry["versions"].append({"version": version, "spec": spec, "template": template, "scores": dict(scores),
                                  "source": source, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
        return version

    def set_alias(self, name: str, alias: str, version: int) -> None:
        entry = self._entry(name)
        if not any(v["version"] == version for v in entry["versions"]):
            raise InputError(f"prompt {name!r} has no version {version}")
        entry["aliases"][alias] = version

    def resolve(self, ref: str) -> tuple[str, int]:
        """`NAME@ALIAS`, `NAME@VERSION` or `NAME` (= production) -> (name, version)."""
        name, _, tag = ref.partition("@")
        entry, tag = self._entry(name), tag or "production"
        if tag.isdigit():
            version = int(tag)
        elif tag in entry["aliases"]:
            version = entry["aliases"][tag]
        else:
            raise InputError(f"prompt {name!r} has no alias {tag!r} (aliases: {', '.join(entry['aliases']) or 'none'})")
        return name, version

    def get(self, ref: str) -> dict:
        name, version = self.resolve(ref)
        for v in self._entry(name)["versions"]:
            if v["version"] == version:
                return {"name": name, **v, "aliases": self.aliases_of(name, version)}
        raise InputError(f"prompt {name!r} has no version {version}")

    def aliases_of(self, name: str, version: int) -> list[str]:
        return sorted(a for a, v in self._entry(name)["aliases"].items() if v == version)

    def promote(self, ref: str, alias: str = "production") -> int:
        """Point `alias` at the version `ref` names (default: the candidate)."""
        name, version = self.resolve(ref if "@" in ref else f"{ref}@candidate")
        self.set_alias(name, alias, version)
        return version

    def rows(self) -> list[dict]:
        return [{"name": name, "version": v["version"], "aliases": ",".join(self.aliases_of(name, v["version"])),
                 "source": v["source"], **{k: v["scores"].get(k) for k in ("dev", "test")}}
                for name, entry in self.data["prompts"].items() for v in entry["versions"]]
