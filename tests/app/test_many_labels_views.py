"""A comparison with 150 labels on the Compare page: pairs and a per-label table instead of a 150×150 matrix."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run
from conftest import ROOT
from pvf_core import jobs

DOMAINS = ["card", "transfer", "cash", "account", "loan", "pin", "fee", "refund", "top_up", "exchange"]
ACTIONS = ["arrival", "lost", "declined", "pending", "limit", "fee", "cancel", "verify", "change", "request",
           "failed", "reversed", "charge", "info", "status"]
LABELS = [f"{d}_{a}" for d in DOMAINS for a in ACTIONS][:149] + ["oos"]


@pytest.fixture
def app(monkeypatch, tiny_model_dir) -> AppTest:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PVF_MODEL", str(tiny_model_dir))
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)


def saved_comparison() -> tuple[int, int]:
    from pvf_core.compare import ArmInfo, build_comparison
    from pvf_core.data import ColumnMapping, read_csv, register_dataset
    from pvf_core.evaluate import EvalResult
    from pvf_core.metrics import classification_metrics

    rows = "".join(f"message {k} about {label.replace('_', ' ')},{label}\n" for k in range(4) for label in LABELS)
    dataset = register_dataset(read_csv(("text,label\n" + rows).encode(), name="intents.csv"),
                               ColumnMapping("classification", "text", "label"))
    texts, refs = list(dataset.splits.test["text"]), list(dataset.splits.test["label"])

    def arm(name: str, shift: int) -> EvalResult:
        # every third row goes to the next label (or, for some, to 'oos'): confusions to show
        predictions = [LABELS[(LABELS.index(r) + shift) % len(LABELS)] if i % 3 == 0 else r
                       for i, r in enumerate(refs)]
        return EvalResult(arm=name, task="classification", n_test=len(refs),
                          metrics=classification_metrics(refs, predictions, LABELS), texts=texts, references=refs,
                          predictions=predictions, label_scores=None, ms_per_example=20.0,
                          latencies_ms=[20.0] * len(refs), prompt_tokens_per_row=40.0, peak_rss_mb=700.0,
                          seconds=1.0, calibration="none")

    comparison = build_comparison([arm("zero-shot", 1), arm("LoRA", -1)],
                                  [ArmInfo("zero-shot", "prompt"), ArmInfo("LoRA", "finetune", train_seconds=60)],
                                  task="classification", labels=LABELS, dataset="intents.csv")
    store = jobs.Store()
    run_id = store.add_run("compare", dataset_id=dataset.id, name="comparison", status="done")
    store.update_run(run_id, folder=str(jobs.run_folder(run_id)))
    comparison.save(jobs.run_folder(run_id))
    return dataset.id, run_id


def test_150_labels_show_pairs_and_a_per_label_table_not_a_matrix(app):
    dataset_id, run_id = saved_comparison()
    app.query_params["dataset"] = str(dataset_id)
    app.query_params["comparison"] = str(run_id)
    at = run(app)
    at = run(at.switch_page("pages/compare.py"))
    assert not at.exception
    markdown = [m.value for m in at.markdown]
    assert any("Most confused pairs" in m and "150 labels" in m for m in markdown), markdown
    traces = [trace.get("type") for c in at.get("plotly_chart") for trace in json.loads(c.proto.spec)["data"]]
    assert traces and "heatmap" not in traces  # the quality and cost charts, but no 150×150 matrix
    assert any(m.label.startswith("Out of scope ('oos') recognised") for m in at.metric)
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Per label: 150 of 150 shown") for c in captions), captions
    run(at.text_input(key="cmp_labels_zero-shot_label_filter").set_value("card_"))
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Per label: 15 of 150 shown") for c in captions), captions
    # the disagreement explorer works as before
    assert any(s.value == "Rows where the arms disagree" for s in at.subheader)
