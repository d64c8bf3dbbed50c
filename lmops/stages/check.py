"""`lmops stage check`: the first DVC stage. `dvc repro` deletes a stage's outputs before it runs the
stage's command, so a bad value in params.yaml used to cost the outputs of the stage that refused it
(metrics and plots are `cache: false`: gone for good). This stage depends on all of params.yaml and
every other stage depends on its output, so DVC validates the params (`lmops stage` validates before
any stage runs) before it deletes anything, as the Prefect flow does.

Its output never changes (the validated values are each stage's own `params:`), so passing the check
dirties no other stage."""
from __future__ import annotations

from pathlib import Path

from lmops.io import write_text
from lmops.layout import PARAMS_CHECKED
from lmops.params import Params

CONTENT = "params.yaml passed `lmops stage check`; every dvc.yaml stage depends on this file\n"


def run(p: Params, root: Path) -> dict:
    write_text(root / PARAMS_CHECKED, CONTENT)
    return {"checked": str(PARAMS_CHECKED)}
