"""Drift reports that travel (issue 11): every judged window's snapshot lands in an Evidently workspace,
a local directory or an `s3://` URI (loopback moto), and is listed back by a fresh workspace, as `evidently
ui --workspace ...` would on another machine; the report link published to Prefect is http(s), never file://."""
from __future__ import annotations

import pytest

from tests.monitor.test_drift import _features


@pytest.fixture(scope="module")
def report():
    from lmops.monitor.drift import run_report
    from lmops.params import MonitorParams

    return run_report(_features(120, 0), _features(120, 2, shift=0.6), MonitorParams())


def test_window_report_lands_in_the_workspace_and_the_link_is_http(report, tmp_path, monkeypatch):
    import tasks.monitor as tm
    from lmops.monitor.workspace import list_snapshots, location
    from lmops.params import MonitorParams

    links = []
    monkeypatch.setattr(tm, "create_link_artifact", lambda link, **kw: links.append(link))
    monkeypatch.setattr(tm, "create_table_artifact", lambda *a, **kw: None)
    monkeypatch.setattr("lmops.monitor.drift.run_report", lambda *a: report)
    p = MonitorParams(ui_url="http://127.0.0.1:8765")
    out = tm.drift_report.fn(None, None, p, str(tmp_path / "state" / "reports" / "20260101T000000.html"), str(tmp_path))
    assert links == [out["link"]] and out["link"].startswith("http://127.0.0.1:8765/projects/")
    assert out["link"].endswith(f"/reports/{out['snapshot_id']}")
    listed = list_snapshots(location(p.workspace, tmp_path))  # a fresh workspace object reads it back
    assert [(s["id"], s["name"]) for s in listed] == [(out["snapshot_id"], "window 20260101T000000")]


def test_workspace_on_s3_keeps_the_history_for_any_machine(report, s3, monkeypatch):
    from lmops.monitor.workspace import list_snapshots, save_snapshot

    for k, v in s3.env.items():  # credentials from the environment; the endpoint is a storage option
        if k != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    uri, options = s3.bucket("lmops-evidently") + "/workspace", {"endpoint_url": s3.endpoint}
    saved = [save_snapshot(report.snapshot, uri, f"window {i}", options) for i in range(2)]
    assert len({s.project_id for s in saved}) == 1  # one project, two runs
    keys = s3.keys("lmops-evidently", "workspace/")
    assert f"workspace/{saved[0].project_id}/snapshots/{saved[1].snapshot_id}.json" in keys
    listed = list_snapshots(uri, options)
    assert [s["id"] for s in listed] == [s.snapshot_id for s in saved]
    assert [s["name"] for s in listed] == ["window 0", "window 1"]
