"""Long context: use far more text than the trained context by three routes, RoPE position scaling
(`rope`), naive-Bayes context extension (`nbce`) and retrieval on LanceDB (`retrieval`), measured on
one seeded evaluation suite (`suite`, `evaluate`). Heavy imports stay inside functions."""
