"""The `lmops` modules a piece of code can run: every `import lmops...` / `from lmops... import`
statement, at any depth (stage modules import lazily inside functions), followed transitively."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from tests.conftest import ROOT


def _module_file(name: str, root: Path = ROOT) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports_of(path: Path, package: str) -> set[str]:
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module or ""
            names.add(mod)
            names |= {f"{mod}.{a.name}" for a in node.names}  # `from lmops.x import module`
    return names


def lmops_closure(module: str, root: Path = ROOT) -> set[Path]:
    """Files (relative to `root`) of every lmops module reachable from `module`, parents included.
    Static and conservative (function-level imports count); plugins that a registry imports by name
    are not seen here: the DVC pipeline test checks the modules each stage really loaded."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not (name == "lmops" or name.startswith("lmops.")):
            continue
        path = _module_file(name, root)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        imported = _imports_of(path, package)
        todo += sorted(imported)
    return {p.relative_to(root) for p in seen.values()}


def covered(path: Path, deps: list[str]) -> bool:
    return any(str(path) == d or str(path).startswith(d.rstrip("/") + "/") for d in deps)
