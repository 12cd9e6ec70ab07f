"""The Compare page through AppTest: run the standard comparison (tiny model), read the answer, reopen it."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run
from conftest import ROOT
from pvf_core import jobs

TIMEOUT = 120


@pytest.fixture
def app(monkeypatch, tiny_model_dir) -> AppTest:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PVF_MODEL", str(tiny_model_dir))
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def test_without_a_dataset_the_page_asks_for_one(app):
    at = run(app)
    run(at.switch_page("pages/compare.py"))
    assert any("Pick a dataset first" in i.value for i in at.info)


def test_standard_comparison_end_to_end(app):
    at = run(app)
    run(at.button(key="home_use").click())
    run(at.switch_page("pages/compare.py"))
    run(at.number_input(key="cmp_max_train").set_value(48))
    run(at.number_input(key="cmp_limit").set_value(16))
    run(at.multiselect(key="cmp_shots").set_value([0]))
    run(at.button(key="cmp_run").click())
    compare_runs = [r for r in jobs.active_jobs() if r.kind == "compare"] or \
        [r for r in jobs.Store().list_runs(kind="compare")]
    assert compare_runs, "no comparison job was started"
    status = jobs.wait(compare_runs[0].id, timeout=300)
    assert status.status == "done", status.error
    run(at)
    subheaders = [s.value for s in at.subheader]
    assert any(s.startswith("Recommendation: use **") for s in subheaders), subheaders
    assert at.query_params.get("comparison") == [str(compare_runs[0].id)] or \
        at.query_params.get("comparison") == str(compare_runs[0].id)
    assert len(at.dataframe) >= 2  # the metrics table and the disagreement explorer
    labels = [b.label for b in at.get("download_button")]
    assert {"Report (HTML)", "Predictions (CSV)", "Everything (JSON)"} <= set(labels)
    # changing priorities re-weights without rerunning any model
    run(at.slider(key="cmp_prio_effort").set_value(5.0))
    assert any(s.startswith("Recommendation: use **") for s in [s.value for s in at.subheader])

    # a reload with the permalink reopens the same comparison
    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    again.query_params["dataset"] = "1"
    again.query_params["comparison"] = str(compare_runs[0].id)
    run(again)
    run(again.switch_page("pages/compare.py"))
    assert any(s.value.startswith("Recommendation: use **") for s in again.subheader)


def test_the_public_demo_caps_the_comparison_and_may_switch_training_off(app, monkeypatch):
    from streamlit import config

    from pvf_core import store
    from ui import session

    for name, value in (("PVF_DEMO", "1"), ("PVF_DEMO_MIN_FREE_MB", "0"), ("PVF_DEMO_MAX_TRAIN_ROWS", "40"),
                        ("PVF_DEMO_MAX_TEST_ROWS", "30"), ("PVF_DEMO_MAX_JOBS", "0")):
        monkeypatch.setenv(name, value)
    shown = config.get_option("client.showErrorDetails")
    try:
        at = run(app)  # a demo session starts with the sample selected
        at = run(at.switch_page("pages/compare.py"))
        assert at.number_input(key="cmp_max_train").value == 40
        assert at.number_input(key="cmp_limit").value == 30
        assert any(c.value.startswith("The public demo trains on at most 40 rows") for c in at.caption)
        run(at.button(key="cmp_run").click())
        assert any(e.value.startswith("Fine-tuning is switched off in this public demo.") for e in at.error)
        assert not [r for r in jobs.Store().list_runs(kind="compare") if r.status != "done"]
    finally:
        session._process_setup.clear()
        store.set_workspace_resolver(None)
        config.set_option("client.showErrorDetails", shown)
