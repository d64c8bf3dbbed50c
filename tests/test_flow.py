"""The `lmops-pipeline` flow end to end on a tiny project, against a temporary Prefect server."""
import json


def test_pipeline_flow_runs_skips_and_publishes(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client

    from flows.pipeline import lmops_pipeline
    from tests.project import make_project

    project = make_project(tmp_path / "proj")
    first = lmops_pipeline(project=str(project))
    assert first and all(first.values())  # every stage ran
    assert json.loads((project / "metrics" / "base.json").read_text())["train_tokens"] > 0
    assert list((tmp_path / "proj-remote").rglob("*"))  # data pushed to the DVC remote

    second = lmops_pipeline(project=str(project))
    assert second.keys() == first.keys() and not any(second.values())  # all skipped via DVC's cache

    import anyio

    async def artifact_keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts()}

    assert {"lmops-summary", "lmops-metrics"} <= anyio.run(artifact_keys)
