"""Prompts as versioned artifacts: a template library (`prompts/*.yaml`), a registry with aliases,
an evaluation harness over the corpus' tasks, and two optimizers: a quality router with a neural
refiner (pattern 1) and an APE/OPRO-style self-refining loop (pattern 2). No Prefect here."""
