"""The Use page through AppTest, with the tiny random model ($PVF_MODEL): try a text on every saved arm,
label an unlabelled CSV with the chosen one, download the CSV and the portable export."""

from __future__ import annotations

import io
import zipfile

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import ROOT
from pvf_core.compare import keep_prompt_version
from pvf_core.evaluate import Arm, evaluate
from pvf_core.export import ArmPackage, export_prompt_version, predict_texts
from pvf_core.models import load_model
from pvf_core.prompting import PromptSpec
from pvf_core.samples import register_sample
from pvf_core.store import Store

TIMEOUT = 180


@pytest.fixture
def sample(workspace):
    return register_sample()


def use_page(dataset, tiny_model_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("PVF_MODEL", str(tiny_model_dir))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["dataset"] = str(dataset.id)
    run(at)
    return run(at.switch_page("pages/use.py"))


def keep(dataset, tiny_model_dir, spec):
    test = dataset.splits.test.head(8)
    result = evaluate(Arm(spec.name(), spec, model=str(tiny_model_dir)), test, task="classification",
                      train=dataset.splits.train, loaded=load_model(str(tiny_model_dir)))
    return keep_prompt_version(Store(), dataset.id, spec, result)


def test_without_saved_arms_the_page_says_where_to_make_one(sample, tiny_model_dir, monkeypatch):
    at = use_page(sample, tiny_model_dir, monkeypatch)
    assert any("Nothing to use yet" in i for i in texts(at.info))
    assert not at.button


def test_try_a_text_label_a_file_and_download(sample, tiny_model_dir, monkeypatch):
    labels = list(sample.splits.labels)
    first = keep(sample, tiny_model_dir, PromptSpec(instruction="Which team?", labels=labels))
    second = keep(sample, tiny_model_dir, PromptSpec(instruction="Which team handles it?", labels=labels, shots=2))
    at = use_page(sample, tiny_model_dir, monkeypatch)

    text = "My parcel never arrived and the tracking page is blank."
    run(at.text_area(key="use_text").set_value(text))
    run(at.button(key="use_try").click())
    (table,) = [d.value for d in at.dataframe if "Arm" in d.value.columns]
    assert list(table["Arm"]) == [f"Prompt: {second.name}", f"Prompt: {first.name}"]  # newest first
    for version, (_, row) in zip((second, first), table.iterrows()):
        expected = predict_texts(ArmPackage.load(export_prompt_version(version.id)), [text],
                                 model=str(tiny_model_dir))
        assert row["Answer"] == expected.predictions[0]
        assert row["How sure"] == pytest.approx(100 * expected.confidence()[0], abs=0.05)

    rows = pd.DataFrame({"ticket": ["A-1", "A-2", "A-3"],
                         "body": ["I was charged twice", "Password reset fails", "The app crashes on start"]})
    run(at.selectbox(key="use_arm").set_value(f"Prompt: {first.name}"))
    run(at.file_uploader(key="use_upload").set_value(("new.csv", rows.to_csv(index=False).encode(), "text/csv")))
    assert at.selectbox(key=next(k for k in [s.key for s in at.selectbox] if k.startswith("use_column"))).value \
        == "body"  # the longest texts
    run(at.button(key="use_run").click())
    assert any(s.startswith("3 rows answered by Prompt: ") for s in texts(at.success))
    shown = next(d.value for d in at.dataframe if "prediction" in d.value.columns)
    expected = predict_texts(ArmPackage.load(export_prompt_version(first.id)), list(rows["body"]),
                             model=str(tiny_model_dir))
    assert list(shown["prediction"]) == expected.predictions
    assert list(shown["ticket"]) == ["A-1", "A-2", "A-3"]
    downloads = {b.proto.label: b for b in at.get("download_button")}
    assert "Download the CSV with a prediction column" in downloads
    assert "Download the portable export (.zip)" in downloads


def test_a_bad_file_gets_the_plain_message_home_gives(sample, tiny_model_dir, monkeypatch):
    keep(sample, tiny_model_dir, PromptSpec(instruction="Which team?", labels=list(sample.splits.labels)))
    at = use_page(sample, tiny_model_dir, monkeypatch)
    run(at.file_uploader(key="use_upload").set_value(("bad.csv", b"\x00\x01\x02\x03" * 50, "text/csv")))
    (error,) = texts(at.error)
    assert error.startswith("**This file cannot be used.**") and "Traceback" not in error
    assert not [b for b in at.button if b.key == "use_run"]


def test_the_export_zip_holds_a_runnable_folder(sample, tiny_model_dir):
    from pvf_core.export import zip_export

    version = keep(sample, tiny_model_dir, PromptSpec(instruction="Which team?", labels=list(sample.splits.labels)))
    names = zipfile.ZipFile(io.BytesIO(zip_export(export_prompt_version(version.id)))).namelist()
    assert {"predict.py", "prompt.txt", "prompt.json", "calibration.json", "README.md", "scores.json"} <= set(names)


@pytest.fixture
def compared(sample, tiny_model_dir, tmp_path):
    """A finished standard comparison of the sample (zero-shot and LoRA, tiny model), kept in the store."""
    from pvf_core.compare import run_comparison
    from pvf_core.finetune import preset_settings

    store = Store()
    run_id = store.add_run("compare", dataset_id=sample.id, name="standard comparison", status="running",
                           settings={"shots": [0], "max_train": 48, "limit": 8, "model": str(tiny_model_dir)})
    folder = tmp_path / f"compare-{run_id}"
    splits = sample.splits
    splits = type(splits)(train=splits.train.head(48), validation=splits.validation, test=splits.test,
                          task=splits.task)
    comparison = run_comparison(splits, model=str(tiny_model_dir), shots=(0,), limit=8, output_dir=folder,
                                lora=preset_settings("quick", epochs=1), dataset=sample.name)
    store.update_run(run_id, folder=str(folder), status="done")
    return run_id, comparison


def test_the_arms_of_a_comparison_answer_as_they_were_scored(sample, compared, tiny_model_dir, monkeypatch):
    from pvf_core.export import comparison_arms, export_comparison_arm

    run_id, comparison = compared
    names = [r.arm for r in comparison.results]
    assert [a.label for a in comparison_arms(Store(), sample.id)] == [f"Comparison #{run_id}: {n}" for n in names]
    at = use_page(sample, tiny_model_dir, monkeypatch)
    assert at.multiselect(key="use_try_arms").value == [f"Comparison #{run_id}: {n}" for n in names]

    row = 3  # a scored test row: every arm gives the answer the comparison reported for it
    text = str(comparison.results[0].texts[row])
    run(at.text_area(key="use_text").set_value(text))
    run(at.button(key="use_try").click())
    (table,) = [d.value for d in at.dataframe if "Arm" in d.value.columns]
    assert list(table["Arm"]) == [f"Comparison #{run_id}: {n}" for n in names]
    assert list(table["Answer"]) == [r.predictions[row] for r in comparison.results]
    assert not any(table["Note"])

    # only the chosen arms answer
    run(at.multiselect(key="use_try_arms").set_value([f"Comparison #{run_id}: {names[-1]}"]))
    run(at.button(key="use_try").click())
    (table,) = [d.value for d in at.dataframe if "Arm" in d.value.columns]
    assert list(table["Arm"]) == [f"Comparison #{run_id}: {names[-1]}"]

    # label a file with the fine-tuned arm of the comparison
    tuned = f"Comparison #{run_id}: {names[-1]}"
    rows = pd.DataFrame({"body": [str(t) for t in comparison.results[-1].texts[:3]]})
    run(at.selectbox(key="use_arm").set_value(tuned))
    run(at.file_uploader(key="use_upload").set_value(("new.csv", rows.to_csv(index=False).encode(), "text/csv")))
    run(at.button(key="use_run").click())
    shown = next(d.value for d in at.dataframe if "prediction" in d.value.columns)
    assert list(shown["prediction"]) == comparison.results[-1].predictions[:3]
    export = export_comparison_arm(run_id, names[-1])
    assert (export / "adapter_model.safetensors").is_file() and (export / "predict.py").is_file()
    assert "Download the portable export (.zip)" in {b.proto.label for b in at.get("download_button")}
