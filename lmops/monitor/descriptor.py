"""The drift-descriptor registry: one `Descriptor` per score, one `Kind` per threshold.

A descriptor says everything the monitor needs about one score, in one place:
- `compute`: the feature-frame column(s) it derives from a window's log frame (or none, when Evidently
  derives them from the logged text while building its Dataset: `evidently`);
- how Evidently reads those columns (`numerical`, `embeddings`);
- `metric`: the Evidently metric that turns them into the score, carrying its `lt(threshold)` test;
- `kind`: which threshold of `drift.monitor.thresholds` applies (and whether `warn_only` lists it).

`lmops.monitor.features.feature_frame` computes every registered descriptor's columns and
`lmops.monitor.drift.run_report` scores every descriptor whose columns a frame has, in registration
order (the order of the scores in `metrics/drift.json`). Kinds are registered beside the descriptors
that introduce them; params validation reads their names from here (`kind_names`).

This module and the built-in descriptor modules (`lmops/monitor/descriptors/`) import neither
pandas, torch nor evidently at import time: params validation loads them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

TEXT_COLUMNS = ("prompt", "response")  # the logged text: in every feature frame, Evidently text columns


@dataclass(frozen=True)
class FeatureContext:
    """What a descriptor may use besides the window's logs."""
    corpus_dir: str | None = None  # the training corpus (data/corpus); None: unknown (e.g. synthetic logs)
    reference_prompts: tuple[str, ...] = ()  # the reference window's prompts (the window's own when it becomes it)


@dataclass(frozen=True)
class Kind:
    """A threshold kind: the largest passing value of the scores of this kind."""
    name: str
    threshold: float  # default of `drift.monitor.thresholds[name]`
    warn_only: bool = False  # in the default `drift.monitor.warn_only`: a failing test warns, is not drift
    doc: str = ""


# A descriptor's feature columns from a window's log frame (rows in log order), or None when they
# cannot be computed for this window (then the score is left out of the report).
Compute = Callable[["pd.DataFrame", FeatureContext], "dict[str, Any] | pd.DataFrame | None"]
# (threshold, critical) -> the Evidently metric whose single value is the score, with its test
Metric = Callable[[float, bool], Any]


@dataclass(frozen=True)
class Descriptor:
    name: str  # the score's key in the window records (metrics/drift.json) and the report
    kind: str  # a registered Kind
    metric: Metric
    compute: Compute | None = None
    numerical: tuple[str, ...] = ()  # columns Evidently reads as numerical
    embeddings: tuple[str, str] | None = None  # (Evidently embedding set name, column prefix)
    evidently: Callable[[], Any] | None = None  # an Evidently descriptor over a text column, aliased `name`
    # (reference, current) -> both, rescaled before the report (the embedding's noise floor)
    prepare: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]] | None = None
    doc: str = field(default="", compare=False)

    def embedding_columns(self, columns: Sequence[str]) -> list[str]:
        return [c for c in columns if self.embeddings and c.startswith(self.embeddings[1])]

    def present(self, columns: Sequence[str]) -> bool:
        """Whether a feature frame with these columns carries this score."""
        if self.evidently is not None:
            return True  # computed by Evidently from the text columns
        if self.embeddings and not self.embedding_columns(columns):
            return False
        return all(c in columns for c in self.numerical)


_DESCRIPTORS: dict[str, Descriptor] = {}
_KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"threshold kind {kind.name!r} is already registered differently")
    _KINDS[kind.name] = kind
    return kind


def register(descriptor: Descriptor) -> Descriptor:
    """Add a descriptor: from then on, feature frames compute it and window reports score it."""
    if descriptor.name in _DESCRIPTORS:
        raise ValueError(f"drift descriptor {descriptor.name!r} is already registered")
    if descriptor.kind not in _KINDS:
        raise ValueError(f"drift descriptor {descriptor.name!r}: unknown threshold kind {descriptor.kind!r} "
                         f"(registered: {sorted(_KINDS)}; register_kind it first)")
    _DESCRIPTORS[descriptor.name] = descriptor
    return descriptor


def unregister(name: str) -> None:
    _DESCRIPTORS.pop(name, None)


def _builtins() -> None:
    import lmops.monitor.descriptors  # noqa: F401  (registers the built-in descriptors and kinds)


def descriptors() -> list[Descriptor]:
    """Every registered descriptor, in registration order."""
    _builtins()
    return list(_DESCRIPTORS.values())


def kinds() -> dict[str, Kind]:
    _builtins()
    return dict(_KINDS)


def kind_names() -> list[str]:
    return list(kinds())


def default_thresholds() -> dict[str, float]:
    return {k.name: k.threshold for k in kinds().values()}


def default_warn_only() -> list[str]:
    return [k.name for k in kinds().values() if k.warn_only]


# ---- helpers for the common shapes ------------------------------------------------------------------

def text(logs: pd.DataFrame, column: str) -> list[str]:
    """A logged text column as strings (missing: "")."""
    return logs[column].fillna("").astype(str).tolist()


def lt_test(threshold: float, critical: bool) -> list:
    """The test every score carries: scores are "higher = more drift", so a score passes below its threshold."""
    from evidently.tests import lt

    return [lt(threshold, is_critical=critical)]


def value_drift(name: str, kind: str, compute: Callable[[pd.DataFrame, FeatureContext], Sequence[float] | None],
                doc: str = "") -> Descriptor:
    """A numeric column computed from the logs, scored as the normed Wasserstein distance between its
    reference and current distributions (Evidently `ValueDrift(method="wasserstein")`)."""
    def metric(threshold: float, critical: bool):
        from evidently.metrics import ValueDrift

        return ValueDrift(column=name, method="wasserstein", tests=lt_test(threshold, critical))

    return Descriptor(name, kind, metric, compute=_one_column(name, compute), numerical=(name,), doc=doc)


def mean_value(name: str, kind: str, compute: Callable[[pd.DataFrame, FeatureContext], Sequence[float] | None],
               doc: str = "") -> Descriptor:
    """A numeric column computed from the logs, scored as its mean over the current window (Evidently
    `MeanValue`): for per-request flags, the share of flagged requests."""
    def metric(threshold: float, critical: bool):
        from evidently.metrics import MeanValue

        return MeanValue(column=name, tests=lt_test(threshold, critical))

    return Descriptor(name, kind, metric, compute=_one_column(name, compute), numerical=(name,), doc=doc)


def text_descriptor(name: str, column: str, evidently_descriptor: str, kind: str = "text", doc: str = "") -> Descriptor:
    """An Evidently text descriptor (e.g. `TextLength`) of a text column, computed by Evidently when it
    builds the Dataset, scored as a normed Wasserstein distance."""
    def build():
        from evidently import descriptors as d

        return getattr(d, evidently_descriptor)(column, alias=name)

    def metric(threshold: float, critical: bool):
        from evidently.metrics import ValueDrift

        return ValueDrift(column=name, method="wasserstein", tests=lt_test(threshold, critical))

    return Descriptor(name, kind, metric, evidently=build, doc=doc)


def _one_column(name: str, compute) -> Compute:
    def columns(logs, ctx):
        values = compute(logs, ctx)
        return None if values is None else {name: list(values)}

    return columns
