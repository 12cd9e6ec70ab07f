"""The Prompt builder through AppTest, with the tiny random model ($PVF_MODEL) so runs take seconds.

The tiny model's answers are random, so these tests check what the page shows against what was stored
and computed, not how good the scores are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import ROOT
from pvf_core.compare import RESULT_FILE, comparable_runs
from pvf_core.metrics import text_metrics
from pvf_core.prompting import PromptSpec
from pvf_core.samples import SAMPLE_INSTRUCTION, SAMPLE_PROMPTS, register_sample
from pvf_core.store import Store
from ui.prompt_results import plain
from ui.settings_help import tip

TIMEOUT = 180
INSTRUCTION = "Decide which team should handle this customer-support message: billing, technical, shipping or account."


@pytest.fixture
def sample(workspace):
    return register_sample()


@pytest.fixture
def builder(monkeypatch, tiny_model_dir, sample) -> AppTest:
    """The Prompt builder with the sample selected and the tiny model."""
    return builder_on(sample, tiny_model_dir, monkeypatch)


def preview(at: AppTest) -> str:
    (code,) = at.code
    return code.value


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame_with(at: AppTest, column: str):
    """The first table that has ``column`` (AppTest finds tables by position only)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def plotly_titles(at: AppTest) -> list[str]:
    titles = []
    for chart in at.get("plotly_chart"):
        title = json.loads(chart.proto.spec)["layout"].get("title", {})
        titles.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return titles


def builder_on(dataset, model_dir, monkeypatch) -> AppTest:
    """The prompt builder opened on a registered dataset, with the model in ``model_dir``."""
    monkeypatch.setenv("PVF_MODEL", str(model_dir))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["dataset"] = str(dataset.id)
    run(at)
    return run(at.switch_page("pages/prompt_builder.py"))


def test_zero_shot_then_two_shot_versions(builder, sample):
    at = builder
    test_text = str(sample.splits.test["text"].iloc[0])
    assert any("No prompt has been scored" in i for i in texts(at.info))

    run(at.text_area(key="pb_instruction").set_value(INSTRUCTION))
    shown = preview(at)
    assert INSTRUCTION in shown and test_text in shown
    assert "Answer with exactly one of: account, billing, shipping, technical." in shown
    assert shown.count("<|im_start|>user") == 1  # zero-shot: the row is the only user turn

    run(at.button(key="pb_run").click())
    store = Store()
    (first,) = store.list_prompt_versions(sample.id)
    assert first.spec["instruction"] == INSTRUCTION and first.spec["shots"] == 0
    assert metrics(at)["Accuracy"] == f"{first.metrics['accuracy']:.1%}"
    assert metrics(at)["Macro-F1"] == f"{first.metrics['macro_f1']:.1%}"
    if first.metrics["calibration"] != "none":  # 'auto' chose a correction on the validation rows
        assert metrics(at)["Uncalibrated"] == f"{first.metrics['raw']['accuracy']:.1%}"
    else:
        assert "Uncalibrated" not in metrics(at)
    assert any(s.startswith(f"Saved as **{first.name}**") for s in texts(at.success))
    run_record = store.get_run(first.run_id)
    assert (Path(run_record.folder) / RESULT_FILE).is_file()  # the per-row result is kept for comparisons
    assert [r.id for r in comparable_runs(store, sample.id)] == [first.run_id]
    assert int(metrics(at)["Tokens per row"]) == round(run_record.timings["prompt_tokens_per_row"])

    run(at.radio(key="pb_examples").set_value("few"))
    run(at.slider(key="pb_shots").set_value(2))
    assert preview(at).count("<|im_start|>user") == 3  # two solved examples, then the row
    run(at.button(key="pb_run").click())
    versions = store.list_prompt_versions(sample.id)
    assert [v.spec["shots"] for v in versions] == [0, 2] and versions[1].spec["selection"] == "balanced"
    assert at.selectbox(key="pb_show_version").value == versions[1].id  # the new version is shown
    assert metrics(at)["Accuracy"] == f"{versions[1].metrics['accuracy']:.1%}"
    assert at.tabs[3].label == "All versions (2)"
    assert "Scores of your prompt versions" in plotly_titles(at)  # no whiskers promised: no spread was measured
    assert "Which answers the model gives" in plotly_titles(at)
    history = frame_with(at, "prompt tokens per row")
    assert "± over draws" not in history.columns  # the column shows once a spread was measured
    assert list(history["name"]) == [v.name for v in versions]
    assert list(history["accuracy (%)"]) == [round(v.metrics["accuracy"] * 100, 1) for v in versions]
    assert any(plain("Examples (shots): 0 → 2") in m for m in texts(at.markdown))  # the diff of the two versions
    side = frame_with(at, "before")
    assert side.loc["accuracy (%)", "before"] == pytest.approx(versions[0].metrics["accuracy"] * 100)
    assert side.loc["accuracy (%)", "after"] == pytest.approx(versions[1].metrics["accuracy"] * 100)
    assert any("points of accuracy" in m or "score the same accuracy" in m for m in texts(at.markdown))


def test_a_vague_instruction_gets_tips(builder):
    at = run(builder.text_area(key="pb_instruction").set_value("Do stuff"))
    assert any("The instruction is very short or vague" in w for w in texts(at.warning))
    run(at.toggle(key="pb_own_format").set_value(True))
    run(at.text_input(key="pb_output_format").set_value("Reply with one word."))
    assert "Reply with one word." in preview(at)
    assert any("does not name the label(s) account, billing, shipping, technical" in w for w in texts(at.warning))
    run(at.text_area(key="pb_instruction").set_value(INSTRUCTION))
    run(at.toggle(key="pb_own_format").set_value(False))
    assert not at.warning
    assert any(s.startswith("No tips") for s in texts(at.success))


def test_widget_help_comes_from_the_spec_metadata(builder):
    at = builder
    assert at.text_area(key="pb_instruction").help == tip(PromptSpec, "instruction")
    assert at.text_area(key="pb_context").help == tip(PromptSpec, "context")
    assert at.radio(key="pb_examples").help == tip(PromptSpec, "shots")
    assert at.radio(key="pb_calibration").help == tip(PromptSpec, "calibration")
    assert "Allowed: 0 to 64." in tip(PromptSpec, "shots")


def test_start_from_an_example_and_try_on_five_rows(builder, sample):
    at = run(builder.button(key="pb_preset_With team descriptions").click())
    assert at.text_area(key="pb_instruction").value == SAMPLE_INSTRUCTION
    assert at.text_area(key="pb_context").value == SAMPLE_PROMPTS["With team descriptions"].context
    assert "- billing: invoices, charges" in preview(at)

    run(at.button(key="pb_try").click())
    (quick,) = [m for m in texts(at.markdown) if m.startswith("**Quick look:")]
    rows = frame_with(at, "expected")
    assert list(rows["expected"]) == list(sample.splits.test["label"].head(5))
    right = int((rows["right"] == "✓").sum())
    assert quick.startswith(f"**Quick look: {right} of 5 right**")
    assert not Store().list_prompt_versions(sample.id)  # a quick look saves nothing

    run(at.button(key="pb_preset_4 examples, balanced").click())
    assert at.radio(key="pb_examples").value == "few" and at.slider(key="pb_shots").value == 4
    assert not any(m.startswith("**Quick look:") for m in texts(at.markdown))  # it was for the other prompt


def test_hand_picked_examples(builder, sample):
    at = run(builder.text_area(key="pb_instruction").set_value(INSTRUCTION))
    run(at.radio(key="pb_examples").set_value("few"))
    run(at.radio(key="pb_pick").set_value("manual"))
    assert any("no rows were hand-picked" in w for w in texts(at.warning))
    assert at.button(key="pb_run").disabled
    run(at.multiselect(key="pb_rows").set_value([3, 10]))
    train = sample.splits.train
    assert str(train["text"].iloc[3]) in preview(at) and str(train["text"].iloc[10]) in preview(at)
    run(at.button(key="pb_run").click())
    (version,) = Store().list_prompt_versions(sample.id)
    assert version.spec["selection"] == "manual" and version.spec["example_ids"] == [3, 10]
    assert any("None are drawn at random here" in m for m in texts(at.markdown))


def test_rerun_with_other_example_draws_shows_the_spread(builder, sample):
    at = run(builder.button(key="pb_preset_4 examples, balanced").click())
    run(at.button(key="pb_run").click())
    run(at.button(key="pb_noise").click())
    (version,) = Store().list_prompt_versions(sample.id)
    variance = version.metrics["variance"]
    assert [s["seed"] for s in variance["per_seed"]] == [0, 1, 2]
    assert variance["per_seed"][0]["accuracy"] == version.metrics["accuracy"]  # seed 0 is the saved run again
    assert any(m.startswith(f"Over **3** example draws: accuracy **{variance['mean'] * 100:.1f} ± "
                            f"{variance['std'] * 100:.1f}**") for m in texts(at.markdown))
    history = frame_with(at, "± over draws")
    assert history["± over draws"].iloc[0] == f"± {variance['std'] * 100:.1f}"
    assert "Scores of your prompt versions (whiskers: spread over example draws, where measured)" in plotly_titles(at)


def test_the_form_survives_a_page_switch(builder):
    at = run(builder.text_area(key="pb_instruction").set_value(INSTRUCTION))
    run(at.radio(key="pb_examples").set_value("few"))
    run(at.slider(key="pb_shots").set_value(6))
    run(at.radio(key="pb_examples").set_value("none"))  # the slider is hidden now ...
    run(at.switch_page("pages/home.py"))
    run(at.switch_page("pages/prompt_builder.py"))
    assert at.text_area(key="pb_instruction").value == INSTRUCTION
    run(at.radio(key="pb_examples").set_value("few"))
    assert at.slider(key="pb_shots").value == 6  # ... and still remembers its value


def test_a_text_to_text_dataset(monkeypatch, tiny_model_dir, workspace):
    from pvf_core.data import ColumnMapping, read_csv, register_dataset

    rows = "".join(f"make {w} loud,{w.upper()}\n" for w in ["cat", "dog", "sun", "sea", "owl", "fox", "elk", "yak"] * 5)
    table = read_csv(("input,output\n" + rows).encode(), name="shout.csv")
    dataset = register_dataset(table, ColumnMapping("text-to-text", "input", "output"))
    at = builder_on(dataset, tiny_model_dir, monkeypatch)
    assert not [b for b in at.button if b.key.startswith("pb_preset_")]  # the presets are for the sample only
    assert "Answer with the result only, without explanations." in preview(at)
    run(at.number_input(key="pb_max_answer").set_value(8))
    run(at.button(key="pb_run").click())
    (version,) = Store().list_prompt_versions(dataset.id)
    assert version.spec["task"] == "text-to-text" and version.spec["max_answer_tokens"] == 8
    assert metrics(at)["chrF"] == f"{version.metrics['chrf']:.1f}"
    assert metrics(at)["Exact match"] == f"{version.metrics['exact_match']:.1%}"
    rows_shown = frame_with(at, "model's answer")
    assert list(rows_shown["expected"]) == list(dataset.splits.test["label"])
    unchanged = text_metrics(list(dataset.splits.test["label"]), list(dataset.splits.test["text"]))
    assert f"For scale: answering every row with its input unchanged scores chrF {unchanged['chrf']:.1f}" in \
        " ".join(texts(at.caption))


def test_progress_text_has_the_time_left():
    from ui.progress import progress_text

    assert progress_text(64, 96, 8.0, "Scored 64/96 rows") == "67% · about 4 s left · Scored 64/96 rows"
    assert progress_text(10, 100, 60.0, "m") == "10% · about 9 min left · m"
    assert progress_text(96, 96, 12.0, "Scored 96/96 rows") == "100% · Scored 96/96 rows"


def test_more_examples_than_training_rows_is_explained(monkeypatch, tiny_model_dir, workspace):
    from pvf_core.data import ColumnMapping, SplitSettings, read_csv, register_dataset

    rows = "".join(f"row {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}\n" for i in range(12))
    table = read_csv(("text,label\n" + rows).encode(), name="small.csv")
    dataset = register_dataset(table, ColumnMapping("classification", "text", "label"),
                               SplitSettings(test_fraction=0.5))
    at = builder_on(dataset, tiny_model_dir, monkeypatch)
    run(at.radio(key="pb_examples").set_value("few"))
    run(at.slider(key="pb_shots").set_value(16))
    assert any("examples were asked for, but only" in w for w in texts(at.warning))
    assert at.button(key="pb_run").disabled and at.button(key="pb_try").disabled
    assert not at.code  # no preview of a prompt that cannot be built


@pytest.fixture
def demo_mode(monkeypatch):
    """PVF_DEMO=1 for one test; afterwards the process-wide demo setup (ui.session) is undone."""
    from streamlit import config

    from pvf_core import store
    from ui import session

    monkeypatch.setenv("PVF_DEMO", "1")
    monkeypatch.setenv("PVF_DEMO_MIN_FREE_MB", "0")
    shown = config.get_option("client.showErrorDetails")
    yield
    session._process_setup.clear()
    store.set_workspace_resolver(None)
    config.set_option("client.showErrorDetails", shown)


def test_the_public_demo_scores_fewer_test_rows(monkeypatch, tiny_model_dir, demo_mode):
    monkeypatch.setenv("PVF_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("PVF_DEMO_MAX_TEST_ROWS", "20")
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    run(at)  # a new demo session starts with the sample selected
    at = run(at.switch_page("pages/prompt_builder.py"))
    assert any("The public demo scores the first 20 of 96 test rows." in c for c in texts(at.caption))
    run(at.button(key="pb_run").click())
    assert any(c.endswith("· 20 test rows") for c in texts(at.caption))
    assert len(frame_with(at, "model's answer")) == 20


def test_find_a_better_prompt(builder, sample, monkeypatch):
    from ui import prompt_search

    monkeypatch.setattr(prompt_search, "MAX_CANDIDATES", 4)
    at = builder
    run(at.text_area(key="pb_instruction").set_value(INSTRUCTION))
    run(at.button(key="pb_search_go").click())
    store = Store()
    (version,) = store.list_prompt_versions(sample.id)
    assert "best prompt found" in version.name
    kept = json.loads((Path(store.get_run(version.run_id).folder) / RESULT_FILE).read_text())
    search = kept["search"]
    # the search's best, or (when its lead was within noise) the prompt it would have replaced
    opening = "No prompt was clearly better" if (search.get("guard") or {}).get("kept") else "Best prompt found"
    (done,) = [s for s in texts(at.success) if s.startswith(opening)]
    assert f"kept as **{version.name}**" in done and "validation rows" in done and "on the test rows" in done
    assert f"{version.metrics['accuracy'] * 100:.1f} on the test rows" in done
    assert search["selected_on"] == "validation" and search["candidates"] == 4 and search["evaluated"] >= 1
    assert PromptSpec.from_dict(search["spec"]) == PromptSpec.from_dict(version.spec)
    # the winner is in the form now
    assert at.text_area(key="pb_instruction").value == version.spec["instruction"]
    assert at.radio(key="pb_examples").value == {0: "none", 1: "one"}.get(version.spec["shots"], "few")
    board = frame_with(at, "prompt tried")
    assert len(board) == search["evaluated"] and board["score (%)"].max() <= 100
    assert any(line in texts(at.markdown) for line in (f"- {x}" for x in search["explanation"]))
