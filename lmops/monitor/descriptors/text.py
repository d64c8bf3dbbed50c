"""Offline text descriptors of the prompt and the response, computed by Evidently from the logged
text (length, word count, non-letter share), each scored as a normed Wasserstein distance to the
reference. They swing with the traffic mix (up to 0.17 on clean 500-request windows) and did not
move with a 30% topic shift, so the kind warns by default instead of signalling drift.

The non-letter share is Evidently's `NonLetterCharacterPercentage` formula (100 * characters that are
neither letters nor spaces / length) computed here, because Evidently's divides by the length and an
empty text (an empty answer is real traffic) raised ZeroDivisionError for the whole window: here an
empty text scores 0, like a missing one in Evidently's."""
from __future__ import annotations

from lmops.monitor.descriptor import Descriptor, Kind, register, register_kind, text_descriptor


def nonletter_share(value) -> float:
    """Percent of the characters of `value` that are neither letters nor spaces (0 for empty/missing)."""
    if not isinstance(value, str) or not value:
        return 0.0
    return 100 * sum(1 for ch in value if not ch.isalpha() and ch != " ") / len(value)


def nonletter_descriptor(name: str, column: str) -> Descriptor:
    base = text_descriptor(name, column, "NonLetterCharacterPercentage")

    def build():
        from evidently.core.datasets import DatasetColumn
        from evidently.descriptors import CustomColumnDescriptor
        from evidently.legacy.core import ColumnType

        def nonletter(col: DatasetColumn) -> DatasetColumn:
            return DatasetColumn(type=ColumnType.Numerical, data=col.data.map(nonletter_share).astype(float))

        return CustomColumnDescriptor(column, nonletter, alias=name)

    return Descriptor(base.name, base.kind, base.metric, evidently=build, doc=base.doc)


register_kind(Kind("text", threshold=0.25, warn_only=True, doc="normed Wasserstein distance of a text descriptor"))

register(text_descriptor("prompt_length", "prompt", "TextLength"))
register(text_descriptor("prompt_words", "prompt", "WordCount"))
register(nonletter_descriptor("prompt_nonletter", "prompt"))
register(text_descriptor("response_length", "response", "TextLength"))
register(nonletter_descriptor("response_nonletter", "response"))
