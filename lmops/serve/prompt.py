"""The production prompt: the prompt registry's `production` version, applied to every request.

`serve.prompt_hook: registry` (the default) renders the registry's prompt named by `serve.prompt_ref`
(`kb_qa@production`) around what the user sent, and logs its version as `name@version`. The served
task is knowledge-base QA: a request in the corpus' question/answer format (`...\nQuestion: q\nAnswer:`,
which is also what the chat endpoint builds from a conversation for a model without a chat template)
is split into its context and its last question. Any other text (a plain completion prompt, or a
conversation already in the model's chat template) is used as sent. The registry file is
re-read when it changes on disk, so `lmops prompts promote` takes effect without a restart. Until
the file, the prompt or its alias exists, prompts are used as sent (one warning per state, never a
failed request), and a registry that stops parsing keeps the last good prompt.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmops.io import InputError
from lmops.layout import CORPUS

log = logging.getLogger("lmops.serve")
NONE = "none"  # the prompt version logged when prompts are used as sent

# The last question of a request in the corpus' QA format (greedy context: the last "Question:").
_LAST_QA = re.compile(r"\A(?P<context>.*)(?:\A|\n)Question: (?P<question>[^\n]*)\nAnswer:[ \t]*\Z", re.S)


def kb_qa_vars(text: str) -> dict:
    """{"context", "question"} of a request, for the kb_qa templates."""
    m = _LAST_QA.search(text)
    if m:
        return {"context": m["context"], "question": m["question"]}
    return {"context": "", "question": text.strip()}


# Task of the registered prompt -> how a request becomes its template variables.
PARSERS: dict[str, Callable[[str], dict]] = {"kb_qa": kb_qa_vars}


class _Missing(Exception):
    """The registry has no such prompt, alias or version (yet)."""


@dataclass(frozen=True)
class _Active:
    render: Callable[[str], str] | None  # None: prompts are used as sent
    version: str
    stamp: tuple | None  # the registry file's (mtime, size, inode) this was read from


class RegistryPrompt:
    """A prompt hook (raw text -> (rendered text, "name@version")) that follows the prompt registry."""

    def __init__(self, registry: Path, ref: str, examples: Callable[[str, int], list[dict]] | None = None):
        self.registry, self.ref = Path(registry), ref
        self.name = ref.partition("@")[0]
        if self.name not in PARSERS:
            raise InputError(f"serve.prompt_ref {ref!r}: the server renders {', '.join(PARSERS)} prompts, "
                             f"not {self.name!r}")
        self.examples = examples or (lambda task, k: [])
        self._lock = threading.Lock()
        self._active = _Active(None, NONE, ("unread",))

    def __call__(self, prompt: str) -> tuple[str, str]:
        if not _LAST_QA.search(prompt):  # a plain completion ("The capital of France is") is continued as sent
            return prompt, NONE
        active = self._current()
        if active.render is None:
            return prompt, NONE
        return active.render(prompt), active.version

    def _current(self) -> _Active:
        stamp = _stamp(self.registry)
        if stamp == self._active.stamp:
            return self._active
        with self._lock:  # one reader reloads; the others keep the prompt they had meanwhile
            if stamp != self._active.stamp:
                self._active = self._load(stamp)
        return self._active

    def _load(self, stamp: tuple | None) -> _Active:
        if stamp is None:
            log.warning("prompt registry %s not found: prompts are used as sent (prompt_version %r)",
                        self.registry, NONE)
            return _Active(None, NONE, None)
        try:
            return self._from_registry(stamp)
        except _Missing as err:  # no such prompt or alias yet: as sent, until a promotion adds it
            log.warning("%s: prompts are used as sent (prompt_version %r)", err, NONE)
            return _Active(None, NONE, stamp)
        except Exception as err:  # a registry that no longer parses must not fail requests
            old = self._active
            log.error("prompt registry %s could not be read (%s): still using %s", self.registry, err, old.version)
            return _Active(old.render, old.version, stamp)

    def _from_registry(self, stamp: tuple) -> _Active:
        from lmops.prompts.registry import PromptRegistry
        from lmops.prompts.templates import _compile  # the library's Jinja2 settings (strict, no escaping)

        registry = PromptRegistry.open(self.registry)
        if self.name not in registry.data["prompts"]:
            raise _Missing(f"no prompt {self.name!r} in {self.registry}")
        try:
            entry = registry.get(self.ref)
        except InputError as err:  # no such alias or version
            raise _Missing(str(err)) from None
        spec, parse = entry["spec"], PARSERS[self.name]
        template = _compile(entry["template"], str(self.registry), 1)  # once per registry change, not per request
        fixed = {"instruction": spec.get("instruction", ""), "question_first": spec.get("question_first", False),
                 "examples": self.examples(self.name, int(spec.get("shots", 0)))}

        def render(text: str) -> str:
            return template.render(**fixed, **parse(text))

        render("\nQuestion: ?\nAnswer:")  # a template that cannot render fails here, not per request
        version = f"{entry['name']}@{entry['version']}"
        log.info("production prompt %s (%s) from %s", version, self.ref, self.registry)
        return _Active(render, version, stamp)


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def corpus_examples(root: Path, seed: int, max_shots: int) -> Callable[[str, int], list[dict]]:
    """Few-shot examples exactly as the prompts stage picked them (its train split, seed and max_shots)."""
    def examples(task: str, shots: int) -> list[dict]:
        if shots <= 0:
            return []
        from lmops.data import Corpus
        from lmops.prompts.harness import TASKS, TaskData, examples_from

        data = TaskData(TASKS[task], Corpus.load(root / CORPUS), {"train": max(1, max_shots)}, seed)
        return examples_from(data.split("train"), max_shots)[:shots]
    return examples


def registry_hook(sp, root: Path) -> RegistryPrompt:
    """The built-in hook (`serve.prompt_hook: registry`) for project `root`: its prompt registry and
    few-shot settings come from the project's `prompts` section (the stage that writes the registry)."""
    from lmops.params import PromptsParams, load_params

    params = root / "params.yaml"
    pp = load_params(params).prompts if params.is_file() else PromptsParams()
    path = Path(pp.registry) if Path(pp.registry).is_absolute() else root / pp.registry
    return RegistryPrompt(path, sp.prompt_ref, corpus_examples(root, pp.seed, pp.loop.max_shots))
