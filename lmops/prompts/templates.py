"""Prompt templates: YAML files with a Jinja2 body, declared variables and a description.

Every error names the template file and line, so a typo in `prompts/` points at itself: the line of
a YAML syntax error, or the line inside the body where an undeclared variable is used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmops.io import InputError

REQUIRED = ("name", "description", "variables", "template")
OPTIONAL = ("task", "role", "phrases")


class TemplateError(InputError):
    """A bad template file; the message starts with `file:line:`."""


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    variables: tuple[str, ...]
    body: str  # Jinja2 source
    task: str | None = None  # the eval task the template formats, if any
    role: str = "format"  # format | meta | refiner | raw | phrases
    phrases: tuple[str, ...] = ()  # for role "phrases": the rephrase operator's instruction pool
    path: str = "<string>"
    body_line: int = 1  # file line of the body's first line, for error messages
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def render(self, **values: Any) -> str:
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise TemplateError(f"{self.path}:{self.body_line}: template {self.name!r} needs variable(s) "
                                f"{', '.join(missing)} to render")
        return _compile(self.body, self.path, self.body_line).render(**values)


def _env():
    from jinja2 import Environment, StrictUndefined

    # keep_trailing_newline: a body ending in "Answer:" must not gain or lose whitespace silently.
    return Environment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)


def _compile(body: str, path: str, body_line: int):
    from jinja2 import TemplateSyntaxError

    try:
        return _env().from_string(body)
    except TemplateSyntaxError as err:
        raise TemplateError(f"{path}:{body_line + (err.lineno or 1) - 1}: Jinja2 syntax error: {err.message}") from None


def _undeclared(body: str, declared: tuple[str, ...], path: str, body_line: int) -> None:
    """Fail on a variable the body uses but `variables` does not declare, naming its line."""
    from jinja2 import TemplateSyntaxError, meta

    try:
        used = meta.find_undeclared_variables(_env().parse(body))
    except TemplateSyntaxError as err:
        raise TemplateError(f"{path}:{body_line + (err.lineno or 1) - 1}: Jinja2 syntax error: {err.message}") from None
    unknown = sorted(used - set(declared) - {"loop"})
    if unknown:
        name = unknown[0]
        offset = next((i for i, line in enumerate(body.splitlines()) if re.search(rf"\b{re.escape(name)}\b", line)), 0)
        raise TemplateError(f"{path}:{body_line + offset}: undefined variable {name!r} in the template body "
                            f"(declared variables: {', '.join(declared) or 'none'})")


def _body_line(text: str, path: str) -> int:
    """The 1-based file line where the `template:` value's text starts (block scalars start a line later)."""
    node = yaml.compose(text)
    for key, value in node.value:
        if key.value == "template":
            return value.start_mark.line + 1 + (1 if value.style in ("|", ">") else 0)
    return 1


def parse_template(text: str, path: str = "<string>") -> Template:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"{mark.line + 1}" if mark else "1"
        raise TemplateError(f"{path}:{line}: malformed YAML: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(raw, dict):
        raise TemplateError(f"{path}:1: a template file must be a mapping with keys {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED if k not in raw]
    unknown = [k for k in raw if k not in REQUIRED + OPTIONAL]
    if missing or unknown:
        raise TemplateError(f"{path}:1: " + "; ".join(
            ([f"missing key(s) {', '.join(missing)}"] if missing else []) +
            ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])))
    variables = tuple(raw["variables"] or ())
    body_line = _body_line(text, path)
    body = str(raw["template"])
    _undeclared(body, variables, path, body_line)
    _compile(body, path, body_line)
    return Template(name=str(raw["name"]), description=str(raw["description"]), variables=variables, body=body,
                    task=raw.get("task"), role=raw.get("role", "format"), phrases=tuple(raw.get("phrases") or ()),
                    path=path, body_line=body_line)


def load_template(path: str | Path) -> Template:
    path = Path(path)
    if not path.is_file():
        raise TemplateError(f"{path}:1: template file not found")
    return parse_template(path.read_text(), str(path))


def load_library(directory: str | Path) -> dict[str, Template]:
    """Every `*.yaml` template under `directory`, by name; duplicate names are an error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"template directory {directory} is missing")
    library: dict[str, Template] = {}
    for path in sorted(directory.glob("*.yaml")):
        t = load_template(path)
        if t.name in library:
            raise TemplateError(f"{path}:1: template name {t.name!r} is also used by {library[t.name].path}")
        library[t.name] = t
    return library


def formats_for(library: dict[str, Template], task: str) -> list[Template]:
    return [t for t in library.values() if t.task == task and t.role == "format"]
