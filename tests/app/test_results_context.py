"""Prompt results with context: the always-the-most-common-answer baseline beside every score, tips that read
the prompt's own settings, calibration explained where it shows, the wizard's words for per-answer scores."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import ROOT
from pvf_core.prompting import PromptSpec, lint
from pvf_core.samples import register_sample
from pvf_core.store import Store
from ui.prompt_results import calibration_words, collapse_advice, majority_baseline

TIMEOUT = 180


def test_collapse_advice_leaves_out_what_the_prompt_already_does():
    plain = PromptSpec(instruction="Sort it.", labels=["a", "b"], shots=4, selection="random", calibration="none")
    advice = collapse_advice(plain)
    assert "balanced examples" in advice and "calibration" in advice
    done = PromptSpec(instruction="Answer a or b.", context="a means yes; b means no.", labels=["a", "b"], shots=4,
                      selection="balanced", calibration="batch")
    advice = collapse_advice(done)
    assert "balanced" not in advice and "calibration" not in advice and "fine-tuned" in advice


def test_the_unbalanced_examples_tip_does_not_suggest_calibration_when_it_is_on():
    examples = [("x1", "a"), ("x2", "a"), ("x3", "a"), ("x4", "b")]
    on = lint(PromptSpec(labels=["a", "b"], shots=4, selection="manual", example_ids=[0, 1, 2, 3]), examples=examples)
    off = lint(PromptSpec(labels=["a", "b"], shots=4, selection="manual", example_ids=[0, 1, 2, 3], calibration="none"),
               examples=examples)
    (tip_on,) = [t for t in on if t.code == "unbalanced_examples"]
    (tip_off,) = [t for t in off if t.code == "unbalanced_examples"]
    assert "or calibration" in tip_off.why and "or calibration" not in tip_on.why and "already on" in tip_on.why


def test_words_for_calibration_and_the_baseline():
    assert "rows being scored" in calibration_words("batch")  # results saved before calibration was fitted
    assert "held-out rows" in calibration_words("fitted") and "empty text" in calibration_words("content-free")
    assert calibration_words({"method": "none"}).startswith("none")
    assert majority_baseline({"true_shares": {"a": 0.25, "b": 0.75}}) == ("b", 0.75)
    assert majority_baseline({}) is None


@pytest.fixture
def scored(workspace, tiny_model_dir, monkeypatch):
    """The Prompt builder on the sample after one run on the test set (tiny model)."""
    sample = register_sample()
    monkeypatch.setenv("PVF_MODEL", str(tiny_model_dir))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["dataset"] = str(sample.id)
    run(at)
    at = run(at.switch_page("pages/prompt_builder.py"))
    run(at.text_area(key="pb_instruction").set_value("Which team: billing, technical, shipping or account?"))
    return run(at.button(key="pb_run").click()), sample


def test_the_builder_shows_the_baseline_and_the_wizards_words(scored):
    at, sample = scored
    (version,) = Store().list_prompt_versions(sample.id)
    common, share = majority_baseline(version.metrics)
    said = texts(at.caption) + texts(at.warning)
    beaten = version.metrics["accuracy"] > share
    phrase = (f"always answering the most common answer ('{common}') gets {share:.1%}" if beaten
              else f"No better than always answering '{common}'**, which gets {share:.1%}")
    assert any(phrase in s for s in said), said
    per_answer = next(d.value for d in at.dataframe if "found %" in d.value.columns)
    assert list(per_answer.columns) == ["answer", "test rows", "found %", "right when said %", "F1 %"]
    assert not any("precision" in d.value.columns for d in at.dataframe)
    said = calibration_words(version.metrics["calibration"])
    assert said != version.metrics["calibration"]  # a method name put in words
    assert any(f"calibration: {said}" in c for c in texts(at.caption)), texts(at.caption)


def test_versions_can_be_renamed_compared_as_text_and_deleted_with_their_files(scored):
    from pathlib import Path

    at, sample = scored
    store = Store()
    run(at.radio(key="pb_examples").set_value("few"))
    run(at.slider(key="pb_shots").set_value(2))
    at = run(at.button(key="pb_run").click())
    first, second = store.list_prompt_versions(sample.id)
    diff = next(c.value for c in at.code if c.language == "diff")
    assert "+USER" in diff and "+ASSISTANT" in diff  # two solved examples appear in the text the model reads

    run(at.text_input(key=f"pb_name_{second.id}").set_value("  two   examples "))
    at = run(at.button(key="pb_rename").click())
    renamed = store.list_prompt_versions(sample.id)[1]
    assert renamed.name == "two examples" and store.get_run(renamed.run_id).name == "two examples"

    folder = Path(store.get_run(second.run_id).folder)
    assert folder.is_dir()
    at = run(at.button(key="pb_delete").click())
    assert [v.id for v in store.list_prompt_versions(sample.id)] == [first.id]
    assert store.get_run(second.run_id) is None and not folder.exists()
