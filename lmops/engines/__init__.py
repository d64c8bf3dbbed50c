"""Other inference engines on lmops' frontier: export a model to their formats, score and time their
builds by the same protocol as lmops' own variants, and serve an export through `lmops serve`."""
