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


def test_a_text_comparison_warns_when_no_arm_beats_leaving_the_text_unchanged(app):
    from pvf_core.compare import ArmInfo, build_comparison
    from pvf_core.data import ColumnMapping, read_csv, register_dataset
    from pvf_core.evaluate import EvalResult
    from pvf_core.metrics import text_metrics

    rows = "".join(f"she go home at {i},she goes home at {i}\n" for i in range(60))
    dataset = register_dataset(read_csv(("input,output\n" + rows).encode(), name="fix.csv"),
                               ColumnMapping("text-to-text", "input", "output"))
    inputs, refs = list(dataset.splits.test["text"]), list(dataset.splits.test["label"])

    def arm(name: str, predictions: list[str]) -> EvalResult:
        return EvalResult(arm=name, task="text-to-text", n_test=len(refs), metrics=text_metrics(refs, predictions),
                          texts=inputs, references=refs, predictions=predictions, label_scores=None,
                          ms_per_example=20.0, latencies_ms=[20.0] * len(refs), prompt_tokens_per_row=40.0,
                          peak_rss_mb=700.0, seconds=1.0, calibration="none")

    comparison = build_comparison([arm("zero-shot", ["home"] * len(refs)), arm("LoRA", ["she home"] * len(refs))],
                                  [ArmInfo("zero-shot", "prompt"), ArmInfo("LoRA", "finetune", train_seconds=60)],
                                  task="text-to-text", labels=[], dataset="fix.csv")
    store = jobs.Store()
    run_id = store.add_run("compare", dataset_id=dataset.id, name="comparison", status="done")
    store.update_run(run_id, folder=str(jobs.run_folder(run_id)))
    comparison.save(jobs.run_folder(run_id))
    app.query_params["dataset"] = str(dataset.id)
    app.query_params["comparison"] = str(run_id)
    at = run(app)
    at = run(at.switch_page("pages/compare.py"))
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("Careful: ") and "scores worse than leaving the text unchanged" in w for w in warnings), \
        warnings
