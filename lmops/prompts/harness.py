"""The evaluation harness: tasks from the corpus with fixed train/dev/test splits, prompt specs that
render through library templates, and scoring (exact match / accuracy, answer log-likelihood)."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from lmops.data import Corpus
from lmops.io import InputError
from lmops.prompts.templates import Template

# Our split names -> the corpus' entity splits. Dev is the corpus' validation entities: the loop and
# the router select on it; test entities are read only for the final, once-only report.
CORPUS_SPLIT = {"train": "train", "dev": "val", "test": "test"}


@dataclass(frozen=True)
class Item:
    vars: dict  # template variables of this item (context/question, or report)
    answer: str


@dataclass(frozen=True)
class PromptSpec:
    """One prompt version: a library format plus the knobs the mutation operators turn."""
    format: str  # name of a task template in prompts/
    instruction: str = ""
    shots: int = 0  # few-shot examples from the train split
    question_first: bool = False

    def key(self) -> tuple:
        return (self.format, self.instruction, self.shots, self.question_first)

    def to_dict(self) -> dict:
        return asdict(self)


def _kb_qa(corpus: Corpus, split: str) -> list[Item]:
    return [Item({"context": r["doc"], "question": r["question"]}, r["answer"]) for r in corpus.qa if r["split"] == split]


def _incident(corpus: Corpus, split: str) -> list[Item]:
    return [Item({"report": r["text"]}, r["category"]) for r in corpus.incidents if r["split"] == split]


def _exact(pred: str, answer: str) -> bool:
    from lmops.model.evaluate import answer_matches

    return answer_matches(pred, answer)


def _first_word(pred: str, answer: str) -> bool:
    words = pred.strip().lower().split()
    return bool(words) and words[0].strip(".,") == answer.lower()


@dataclass(frozen=True)
class EvalTask:
    name: str
    metric: str  # what `score` means for this task
    load: Callable[[Corpus, str], list[Item]]
    correct: Callable[[str, str], bool]
    max_new_tokens: int
    description: str  # one line for the meta-prompt
    # An instruct model's assistant turn opens with this (from the item's template variables), so that it
    # answers in the form exact match reads: "The operating pressure of Vindor-417 is" -> " 3 bar."
    lead: Callable[[dict], str] = lambda variables: ""


def _qa_lead(variables: dict) -> str:
    """The lead of the question the text asks: a clean question, or a line of it ("Question: ..." too);
    "" when none reads as one (a raw prompt with typos gets no help)."""
    from lmops.data.generate import qa_lead

    for line in variables["question"].splitlines():
        lead = qa_lead(line.strip().removeprefix("Question:").strip())
        if lead:
            return lead
    return ""


TASKS: dict[str, EvalTask] = {
    "kb_qa": EvalTask("kb_qa", "exact_match", _kb_qa, _exact, 8,
                      "Instructions for answering questions about plant equipment from its document.", _qa_lead),
    "incident_category": EvalTask("incident_category", "accuracy", _incident, _first_word, 3,
                                  "Instructions for routing incident reports to a category.",
                                  lambda variables: "Category:"),
}


@dataclass
class TaskData:
    """Fixed, seeded splits of one task. `reads` records every split handed out, so a test can prove
    that the optimizers never touched `test` during selection."""
    task: EvalTask
    corpus: Corpus
    sizes: dict[str, int]
    seed: int = 0
    reads: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Item]:
        if name not in CORPUS_SPLIT:
            raise KeyError(f"unknown split {name!r}; splits are {', '.join(CORPUS_SPLIT)}")
        self.reads.append(name)
        items = self.task.load(self.corpus, CORPUS_SPLIT[name])
        random.Random(f"{self.seed}-{name}").shuffle(items)
        items = items[:self.sizes.get(name, len(items))]
        if not items:
            raise InputError(f"task {self.task.name!r}: the {name} split is empty (corpus split "
                             f"{CORPUS_SPLIT[name]!r} has no rows, or its size is 0 in params)")
        return items


def examples_from(items: list[Item], k: int) -> list[dict]:
    return [{**it.vars, "answer": it.answer} for it in items[:k]]


def render(spec: PromptSpec, library: dict[str, Template], items: list[Item], examples: list[dict]) -> list[str]:
    if spec.format not in library:
        raise InputError(f"prompt spec names template {spec.format!r}, which is not in the library")
    t = library[spec.format]
    return [t.render(instruction=spec.instruction, examples=examples[:spec.shots],
                     question_first=spec.question_first, **it.vars) for it in items]


def as_asked(backend, task: EvalTask, prompts: list[str], variables: list[dict]) -> list[str]:
    """The rendered prompts as the backend's model is asked: an instruct model (a backend with a chat
    template) gets each as one user turn, its assistant turn opened with the task's lead; a base model
    (or a remote server) gets them as they are."""
    if not getattr(backend, "chat", False):
        return prompts
    return [backend.chat_turn(p, task.lead(v)) for p, v in zip(prompts, variables)]


@dataclass(frozen=True)
class Scores:
    score: float  # exact match or accuracy, per the task's metric
    n: int
    loglik: float | None = None  # mean answer log-likelihood (nats), when asked for


def score(backend, task: EvalTask, spec: PromptSpec, library: dict[str, Template], items: list[Item],
          examples: list[dict], with_loglik: bool = False) -> Scores:
    prompts = as_asked(backend, task, render(spec, library, items, examples), [it.vars for it in items])
    preds = backend.generate(prompts, task.max_new_tokens)
    hits = sum(task.correct(p, it.answer) for p, it in zip(preds, items))
    ll = None
    if with_loglik:
        lls = backend.loglik(prompts, [" " + it.answer for it in items])
        ll = round(sum(lls) / len(lls), 4)
    return Scores(round(hits / len(items), 4), len(items), ll)
