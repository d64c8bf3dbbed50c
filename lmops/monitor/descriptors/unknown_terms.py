"""`prompt_unknown_terms`: does a request use terms the model never saw in training?

The text descriptors and the mean embedding barely move when 30% of the traffic asks about new
equipment in the same phrasing (measured: within the clean windows' spread). What does change is
the vocabulary: new equipment names and kinds, chat slang, recipe words. So every prompt gets
`prompt_unknown_terms` = 1 if it has a word or equipment name absent from the model's training
texts or from the reference window (which defines normal phrasing: the simulator's "Which category
is this incident?" never occurs in training), and the report tests the window's mean (the share of
such requests) against the `unknown` threshold: the sharpest signal of a topic, style or domain
shift here. Offline, unlike Evidently's OOVWordsPercentage (which needs NLTK's English word list).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from lmops.monitor.descriptor import Kind, mean_value, register, register_kind, text

# Words of 3+ letters, and equipment names like "Vindor-417"; incident numbers ("INC-4821") and bare
# digits are per-request noise, not vocabulary.
TERM = re.compile(r"\b[A-Z][a-z]+-\d{3}\b|\b[a-zA-Z]{3,}\b")


def terms(text: str) -> set[str]:
    return {t.lower() for t in TERM.findall(text)}


def domain_vocab(texts: Iterable[str]) -> frozenset[str]:
    vocab: set[str] = set()
    for t in texts:
        vocab |= terms(t)
    return frozenset(vocab)


@lru_cache(maxsize=4)
def corpus_vocab(corpus_dir: str) -> frozenset[str]:
    """The vocabulary of the texts the model was trained on (the corpus' train split)."""
    from lmops.data import Corpus
    from lmops.model.train import training_texts

    return domain_vocab(training_texts(Corpus.load(Path(corpus_dir))))


def known_vocab(corpus_dir: str | Path, reference_prompts: Iterable[str]) -> frozenset[str]:
    """The terms a window's requests are checked against: the training texts' and the reference window's."""
    return corpus_vocab(str(corpus_dir)) | domain_vocab(reference_prompts)


def has_unknown_terms(text: str, vocab: frozenset[str]) -> float:
    return float(bool(terms(text) - vocab))


def _flags(logs, ctx) -> list[float] | None:
    if ctx.corpus_dir is None:
        return None  # no training vocabulary: not scored
    vocab = known_vocab(ctx.corpus_dir, ctx.reference_prompts)
    return [has_unknown_terms(t, vocab) for t in text(logs, "prompt")]


register_kind(Kind("unknown", threshold=0.1, doc="share of requests with terms never seen in training"))
register(mean_value("prompt_unknown_terms", "unknown", _flags))
