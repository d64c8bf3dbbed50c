"""Offline text descriptors of the prompt and the response, computed by Evidently from the logged
text (length, word count, non-letter share), each scored as a normed Wasserstein distance to the
reference. They swing with the traffic mix (up to 0.17 on clean 500-request windows) and did not
move with a 30% topic shift, so the kind warns by default instead of signalling drift."""
from __future__ import annotations

from lmops.monitor.descriptor import Kind, register, register_kind, text_descriptor

register_kind(Kind("text", threshold=0.25, warn_only=True, doc="normed Wasserstein distance of a text descriptor"))

register(text_descriptor("prompt_length", "prompt", "TextLength"))
register(text_descriptor("prompt_words", "prompt", "WordCount"))
register(text_descriptor("prompt_nonletter", "prompt", "NonLetterCharacterPercentage"))
register(text_descriptor("response_length", "response", "TextLength"))
register(text_descriptor("response_nonletter", "response", "NonLetterCharacterPercentage"))
