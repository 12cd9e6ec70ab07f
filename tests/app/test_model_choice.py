"""Home's model choice and hub datasets (AppTest): bundled, hub (offline: explained), a local folder, too big."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import ROOT

TIMEOUT = 120


@pytest.fixture
def app(monkeypatch) -> AppTest:
    monkeypatch.chdir(ROOT)
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def choose(at: AppTest, source: str) -> AppTest:
    run(at.toggle(key="model_choose").set_value(True))
    return run(at.radio(key="model_source").set_value(source))


def test_the_bundled_model_is_shown_with_its_size_before_loading(app):
    at = run(app)
    assert not at.toggle(key="model_choose").value  # Home reads no model config until asked
    assert "Parameters" not in metrics(at)
    at = run(at.toggle(key="model_choose").set_value(True))
    found = metrics(at)
    assert found["Parameters"] == "135M" and found["Context length"] == "8,192 tokens"
    assert float(found["Memory to run it"].split()[0]) > 0.5
    assert any("The pages use SmolLM2-135M-Instruct" in s for s in texts(at.success))


def test_offline_the_hub_option_says_why(app, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = choose(run(app), "Hugging Face hub")
    assert any("Hub models are unavailable" in i and "offline" in i for i in texts(at.info))
    assert not any(b.key == "model_use" for b in at.button)
    assert "Parameters" not in metrics(at)


def test_a_local_folder_is_checked_then_used_by_the_pages(app, tiny_model_dir):
    at = choose(run(app), "A folder on this machine")
    assert any("Type the path" in i for i in texts(at.info))
    at = run(at.text_input(key="model_folder").set_value(str(tiny_model_dir)))
    assert metrics(at)["Context length"] == "1,024 tokens"
    at = run(at.button(key="model_use").click())
    assert at.session_state["model_name"] == str(tiny_model_dir)
    assert at.query_params.get("model") == str(tiny_model_dir)
    assert any("Model: **" + str(tiny_model_dir) in e.label for e in at.expander)


def test_a_model_that_will_not_fit_is_refused_with_the_reason(app, tiny_model_dir, monkeypatch):
    import pvf_core.model_choice as model_choice

    monkeypatch.setattr(model_choice, "available_mb", lambda: 300.0)
    at = choose(run(app), "A folder on this machine")
    at = run(at.text_input(key="model_folder").set_value(str(tiny_model_dir)))
    refusal = [e for e in texts(at.error) if "will not fit" in e]
    assert refusal and "GB are free on this machine" in refusal[0]
    assert not any(b.key == "model_use" for b in at.button)


def test_a_comparison_of_arms_of_different_models_is_labelled():
    import dataclasses

    from pvf_core import compare as c
    from pvf_core.evaluate import EvalResult
    from pvf_core.metrics import classification_metrics
    from ui.comparison_view import _readable_table

    refs = ["pos", "neg"] * 20

    def result(arm, predictions, model):
        return EvalResult(arm=arm, task="classification", n_test=len(refs), metrics=classification_metrics(
            refs, predictions, ["neg", "pos"]), texts=[f"row {i}" for i in range(len(refs))], references=refs,
            predictions=predictions, label_scores=None, ms_per_example=10.0, latencies_ms=[10.0] * len(refs),
            prompt_tokens_per_row=50.0, peak_rss_mb=600.0, seconds=1.0, calibration="none", model=model)

    small = result("zero-shot", ["pos"] * 40, "SmolLM2-135M-Instruct (bundled, runs offline)")
    large = result("LoRA", refs, "HuggingFaceTB/SmolLM2-360M-Instruct + adapter")
    comparison = c.build_comparison([small, large], [c.ArmInfo("zero-shot", "prompt"), c.ArmInfo("LoRA", "finetune")],
                                    task="classification", labels=["neg", "pos"])
    table = _readable_table(comparison)
    assert list(table["model"]) == [small.model, "HuggingFaceTB/SmolLM2-360M-Instruct"]
    tuned = dataclasses.replace(large, model=small.model + " + adapter")
    same = dataclasses.replace(comparison, results=[small, tuned])
    assert "model" not in _readable_table(same).columns


def test_offline_a_hub_dataset_says_why(app, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = run(run(app).radio(key="home_source").set_value("A Hugging Face hub dataset"))
    assert any("Hub datasets are unavailable" in i for i in texts(at.info))


def test_a_hub_dataset_gets_the_same_mapping_and_health_check(app, monkeypatch, tmp_path):
    import datasets

    import pvf_core.model_choice as model_choice

    monkeypatch.setattr(model_choice, "hub_status", lambda: (True, ""))  # reachable, as on a hosted deployment
    texts_ = [f"The film number {i} was {'great' if i % 2 else 'boring'}" for i in range(120)]
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"sentence": texts_, "label": [i % 2 for i in range(120)]},
                               features=features).save_to_disk(str(folder))
    at = run(run(app).radio(key="home_source").set_value("A Hugging Face hub dataset"))
    assert any("Type a dataset id" in i for i in texts(at.info))
    at = run(at.text_input(key="home_hub_id").set_value(str(folder)))
    assert {m.label: m.value for m in at.metric}["Rows"] == "120"
    assert next(r for r in at.radio if r.label == "Task").value == "classification"
    run(at.button(key="home_use").click())
    assert any(s.startswith("Selected: **") for s in texts(at.success))
