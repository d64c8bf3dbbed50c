"""Long context: use far more text than the trained context by three routes, RoPE position scaling
(`rope`, `finetune`), naive-Bayes context extension (`nbce`) and retrieval on LanceDB (`retrieval`),
measured on one seeded evaluation suite (`suite`, `evaluate`). Each method the stage compares is one
module in `methods` behind one registry (`methods.registry`); `experiment.compare` runs them all.
Heavy imports stay inside functions."""
