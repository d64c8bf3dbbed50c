"""The `lmops-pipeline` flow end to end on a tiny project, against a temporary Prefect server."""
import json


def test_pipeline_flow_runs_skips_and_publishes(tmp_path, prefect_server, monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client

    import flows.pipeline
    from flows.pipeline import lmops_pipeline
    from tests.project import make_project

    project = make_project(tmp_path / "proj")
    first = lmops_pipeline(project=str(project), scenario=False)
    assert first and all(first.values())  # every stage ran
    assert "drift" not in first and "scenario" not in first  # the closed loop is a flow, not a DVC stage
    assert json.loads((project / "metrics" / "base.json").read_text())["train_tokens"] > 0
    assert list((tmp_path / "proj-remote").rglob("*"))  # data pushed to the DVC remote

    # The scenario runs after the stages, as a subflow on the same server, and its summary is in the
    # run's report. Its real run (worker, model server, retraining) is tests/flows/test_drift_loop.py; here a
    # stand-in flow writes the summary, so this checks the wiring at the cost of a DVC no-op.
    called = []

    @flow(name="lmops-scenario")
    def fake_scenario(project: str = ".") -> dict:
        from prefect.context import get_run_context

        called.append((project, get_run_context().flow_run.parent_task_run_id))
        assert (tmp_path / "proj" / "metrics" / "quantization.json").exists(), "the scenario ran before the stages"
        out = {"promoted": "v9.9.9", "false_alarms": 0, "retrain_runs": 1, "windows": []}
        (tmp_path / "proj" / "metrics" / "drift.json").write_text(json.dumps(out))
        return out

    monkeypatch.setattr(flows.pipeline, "drift_scenario", fake_scenario)
    second = lmops_pipeline(project=str(project))
    stages = {k: v for k, v in second.items() if k != "scenario"}
    assert stages.keys() == first.keys() and not any(stages.values())  # all skipped via DVC's cache
    assert second["scenario"] and called == [(str(project), called[0][1])] and called[0][1], "not a subflow"

    import anyio

    async def artifacts():
        async with get_client() as client:
            return sorted(await client.read_artifacts(), key=lambda a: a.created)

    found = {a.key: a for a in anyio.run(artifacts)}  # the latest version of each key
    assert {"lmops-summary", "lmops-metrics"} <= found.keys()
    assert "`scenario` | ran" in found["lmops-summary"].data
    assert '"file": "metrics/drift.json", "metric": "promoted", "value": "v9.9.9"' in str(found["lmops-metrics"].data)
