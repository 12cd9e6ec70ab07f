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
    # the time it will take, before it starts: the parts of the comparison from its tokens and the speed now
    (planned,) = [m.value for m in at.markdown if m.value.startswith("**Estimated time here: about")]
    assert "prompting" in planned and "fine-tuning" in planned and "scoring the fine-tuned model" in planned
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
    # predicted against actual, kept with the run
    (timed,) = [e.label for e in at.expander if e.label.startswith("Time: predicted")]
    timings = jobs.Store().get_run(compare_runs[0].id).timings
    assert timings["predicted_seconds"] > 0 and timings["actual_parts"]["fine-tuning"] > 0
    assert "× the estimate" in timed
    assert not any("different models" in i.value for i in at.info)  # the LoRA arm runs on the prompts' model
    labels = [b.label for b in at.get("download_button")]
    assert {"Report (HTML)", "Predictions (CSV)", "Everything (JSON)"} <= set(labels)
    # changing priorities re-weights without rerunning any model
    run(at.slider(key="cmp_prio_min_difference").set_value(5.0))
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


def _saved_classification_comparison(latency_measured: bool) -> tuple[int, int]:
    """A dataset with unbalanced answers and a saved three-arm comparison of it (no model run): ids."""
    from pvf_core.compare import ArmInfo, build_comparison
    from pvf_core.data import ColumnMapping, read_csv, register_dataset
    from pvf_core.evaluate import EvalResult
    from pvf_core.metrics import classification_metrics

    labels = ["anger"] * 6 + ["joy"] * 3 + ["optimism"]
    rows = "".join(f"tweet number {i} here,{labels[i % 10]}\n" for i in range(300))
    dataset = register_dataset(read_csv(("text,label\n" + rows).encode(), name="tweets.csv"),
                               ColumnMapping("classification", "text", "label"))
    texts, refs = list(dataset.splits.test["text"]), list(dataset.splits.test["label"])
    model = "tiny"

    def arm(name: str, predictions: list[str], tokens: float, adapter: bool = False) -> EvalResult:
        result = EvalResult(arm=name, task="classification", n_test=len(refs),
                            metrics=classification_metrics(refs, predictions, sorted(set(refs))), texts=texts,
                            references=refs, predictions=predictions, label_scores=None, ms_per_example=tokens,
                            latencies_ms=[tokens] * len(refs), prompt_tokens_per_row=tokens, peak_rss_mb=700.0,
                            seconds=1.0, calibration="none", computed_tokens_per_row=tokens,
                            model=f"{model} + adapter" if adapter else model)
        if latency_measured:  # the harness times 30 single queries and measures a per-token time
            result.latencies_ms, result.ms_per_token, result.memory_mb = [12.0] * 30, 0.4, 650.0
        return result

    few = [r if i % 4 == 0 else "anger" for i, r in enumerate(refs)]  # mostly the common answer: poor macro-F1
    tuned = [r if i % 5 else ("joy" if r != "joy" else "anger") for i, r in enumerate(refs)]
    zero = [r if i % 3 == 0 else "joy" for i, r in enumerate(refs)]
    comparison = build_comparison([arm("zero-shot", zero, 30.0), arm("4-shot", few, 300.0),
                                   arm("LoRA", tuned, 30.0, adapter=True)],
                                  [ArmInfo("zero-shot", "prompt"), ArmInfo("4-shot", "prompt"),
                                   ArmInfo("LoRA", "finetune", train_seconds=60, train_rows=200)],
                                  task="classification", labels=sorted(set(refs)), dataset="tweets.csv")
    store = jobs.Store()
    run_id = store.add_run("compare", dataset_id=dataset.id, name="comparison", status="done")
    store.update_run(run_id, folder=str(jobs.run_folder(run_id)))
    comparison.save(jobs.run_folder(run_id))
    return dataset.id, run_id


def test_the_decision_rule_is_shown_and_its_controls_recompute_without_a_model(app):
    dataset_id, run_id = _saved_classification_comparison(latency_measured=True)
    app.query_params["dataset"] = str(dataset_id)
    app.query_params["comparison"] = str(run_id)
    at = run(app)
    at = run(at.switch_page("pages/compare.py"))
    assert any(s.value == "Recommendation: use **LoRA**" for s in at.subheader), [s.value for s in at.subheader]
    markdown = " ".join(m.value for m in at.markdown)
    assert "Deciding score: macro-F1, because the answers are unbalanced" in markdown
    assert "Practical threshold: differences under 1 points" in markdown and "Step 4:" in markdown
    captions = " ".join(c.value for c in at.caption)
    assert "Latency: measured one query at a time on 30 rows." in captions
    assert "Memory answering: measured for each arm on its own." in captions
    assert "a merged adapter costs what its base model costs" in captions
    tests_table = next(d.value for d in at.dataframe if "p adjusted (Holm)" in d.value.columns)
    assert len(tests_table) == 3
    # the user decides on accuracy instead: the page says so and re-tests with McNemar, no model needed
    at = run(at.selectbox(key="cmp_prio_metric").set_value("accuracy"))
    assert any("accuracy, as you chose." in c.value for c in at.caption)
    assert any("exact McNemar" in c.value for c in at.caption)
    # a practical threshold of 20 points: 4-shot (10 behind) is no longer separated, yet LoRA is as good on every count
    at = run(at.slider(key="cmp_prio_min_difference").set_value(20.0))
    assert any(s.value == "Recommendation: use **LoRA**" for s in at.subheader)
    markdown = " ".join(m.value for m in at.markdown)
    assert "4-shot is set aside: LoRA answers right" in markdown
    assert "LoRA is at least as good on every count" in markdown
    assert "Practical threshold: differences under 20 points" in markdown
