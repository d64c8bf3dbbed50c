"""The long-context methods, one module each, compared on the same items:

- `truncation`: keep the last tokens that fit the trained context (the baseline);
- `rope`: the whole prompt through a RoPE-scaled model (`rope_<type>` and fine-tuned `rope_<type>_ft`);
- `nbce`: NBCE over token chunks of the whole context (the simplified pooling rule);
- `nbce_ref`: the same chunks under NBCE's reference rule (top-p entropy, stickiness eta, nucleus);
- `retrieval`: the top-k chunks from LanceDB, best chunk nearest the question;
- `retrieval_nbce`: NBCE over the top-k retrieved chunks.

`base` says what a method is (`Method`, `Context`), `registry` maps each name to its factory.
Adding a method: one module here and one line in `registry.METHODS` (docs/extending.md).
"""
from lmops.longctx.methods.base import Context, Method, MethodBase

__all__ = ["Context", "Method", "MethodBase"]  # the registry: lmops.longctx.methods.registry
