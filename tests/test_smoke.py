import subprocess
import sys


def test_importing_lmops_does_not_import_prefect():
    code = "import sys, lmops, lmops.params, lmops.stages, lmops.cli; print('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_tiny_model_trains_and_scores(tiny_root, tiny_params):
    from lmops.stages.evaluate import run as stage_evaluate

    metrics = stage_evaluate(tiny_params, tiny_root)
    assert metrics["val_perplexity"] < metrics["uniform_perplexity"]
    assert (tiny_root / "metrics" / "base.json").exists()
