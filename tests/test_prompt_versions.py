"""What the Prompt builder stands on: draft checks, the sample's presets, kept versions, history, noise, figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pvf_core.compare import (RESULT_FILE, comparable_runs, compare_versions, keep_prompt_version, keep_variance,
                              load_eval_result, prompt_history)
from pvf_core.evaluate import Arm, evaluate, evaluate_seeds
from pvf_core.jobs import run_folder
from pvf_core.prompting import PromptSpec, check_prompt, prompt_budget
from pvf_core.report import budget_figure, shares_figure, version_history_figure
from pvf_core.samples import SAMPLE_PROMPTS, TOPICS, is_sample_task, register_sample
from pvf_core.store import Store


@pytest.fixture
def sample(workspace):
    return register_sample()


ROWS = 32  # test rows scored here: enough for every answer to occur, quick with the tiny model


def score(spec: PromptSpec, sample, loaded):
    return evaluate(Arm(spec.name(), spec), sample.splits.test.head(ROWS), task="classification",
                    labels=sample.labels, train=sample.splits.train, loaded=loaded)


def test_the_sample_presets_fit_the_sample(sample, tiny_model):
    assert is_sample_task(sample.labels) and not is_sample_task(["pos", "neg"])
    assert list(SAMPLE_PROMPTS) == ["Plain zero-shot", "With team descriptions", "4 examples, balanced"]
    for name, spec in SAMPLE_PROMPTS.items():
        assert spec.labels == sample.labels, name
        checked = check_prompt(spec, tiny_model.tokenizer, tiny_model.context_length, train=sample.splits.train,
                               test_texts=sample.splits.test["text"])
        assert checked.budget.fits, name
        assert not [t.code for t in checked.tips if t.level != "info"], (name, checked.tips)
    described = SAMPLE_PROMPTS["With team descriptions"]
    assert all(f"- {team}:" in described.context for team in TOPICS)
    few = SAMPLE_PROMPTS["4 examples, balanced"]
    checked = check_prompt(few, tiny_model.tokenizer, 1024, train=sample.splits.train,
                           test_texts=sample.splits.test["text"])
    shown = sample.splits.train["label"].iloc[checked.example_ids[0]]
    assert sorted(shown) == sorted(TOPICS)  # one solved message per team


def test_check_prompt_matches_what_evaluate_sees(sample, tiny_model):
    spec = PromptSpec(instruction="Do stuff", labels=sample.labels, shots=3, selection="similar")
    test_texts = sample.splits.test["text"].head(ROWS).tolist()
    checked = check_prompt(spec, tiny_model.tokenizer, 1024, train=sample.splits.train, test_texts=test_texts)
    assert len(checked.example_ids) == len(test_texts) and all(len(ids) == 3 for ids in checked.example_ids)
    assert len({tuple(ids) for ids in checked.example_ids}) > 1  # 'similar': each row its own examples
    first = [(str(sample.splits.train["text"].iloc[i]), str(sample.splits.train["label"].iloc[i]))
             for i in checked.example_ids[0]]
    expected = prompt_budget(spec, tiny_model.tokenizer, 1024, examples=first, row_texts=test_texts,
                             pool=sample.splits.train)
    assert checked.budget.to_dict() == expected.to_dict()
    assert "vague_instruction" in [t.code for t in checked.tips]
    result = score(spec, sample, tiny_model)
    assert result.budget == checked.budget.to_dict()
    assert [t["code"] for t in result.tips] == [t.code for t in checked.tips]


def test_keep_prompt_version_keeps_the_result_for_comparisons(sample, tiny_model):
    store = Store()
    spec = SAMPLE_PROMPTS["Plain zero-shot"]
    result = score(spec, sample, tiny_model)
    version = keep_prompt_version(store, sample.id, spec, result)
    assert version.name == "v1 (zero-shot)" and version.spec == spec.to_dict()
    run = store.get_run(version.run_id)
    assert run.kind == "prompt" and run.status == "done"
    assert Path(run.folder) == run_folder(run.id) and (Path(run.folder) / RESULT_FILE).is_file()
    kept = load_eval_result(run.folder)
    assert kept.predictions == result.predictions and kept.metrics["accuracy"] == result.metrics["accuracy"]
    assert [r.id for r in comparable_runs(store, sample.id)] == [run.id]


def test_history_noise_and_two_versions_side_by_side(sample, tiny_model):
    store = Store()
    zero, few = SAMPLE_PROMPTS["Plain zero-shot"], SAMPLE_PROMPTS["4 examples, balanced"]
    first = keep_prompt_version(store, sample.id, zero, score(zero, sample, tiny_model))
    second = keep_prompt_version(store, sample.id, few, score(few, sample, tiny_model), name="balanced four")
    spread = evaluate_seeds(Arm("4-shot", few), sample.splits.test.head(ROWS), task="classification",
                            labels=sample.labels, train=sample.splits.train, loaded=tiny_model, seeds=[0, 1, 2])
    keep_variance(store, second.run_id, spread)

    history = prompt_history(store, sample.id, "classification")
    assert list(history["name"]) == ["v1 (zero-shot)", "balanced four"]
    assert list(history["model"]) == [tiny_model.name] * 2  # which model answered is kept with each version
    assert history["accuracy"].iloc[0] == pytest.approx(first.metrics["accuracy"] * 100)
    assert math.isnan(history["spread"].iloc[0]) and history["draws"].iloc[0] == 0
    assert history["spread"].iloc[1] == pytest.approx(spread["std"] * 100) and history["draws"].iloc[1] == 3
    assert history["prompt_tokens"].iloc[1] > history["prompt_tokens"].iloc[0]  # examples cost tokens
    assert history["kept"].all()

    versions = store.list_prompt_versions(sample.id)
    assert "results" not in versions[1].metrics["variance"]  # the spread only, not three result objects
    outcome = compare_versions(store, versions[0], versions[1], "classification")
    assert outcome["changes"] == ["Examples (shots): 0 → 4"]
    assert outcome["test"].test == "exact McNemar" and outcome["test"].a == "v1 (zero-shot)"
    assert outcome["sentences"][0] == outcome["test"].sentence()
    assert outcome["spread"] == pytest.approx(spread["std"])
    assert "Redrawing the examples moves the score by about" in outcome["sentences"][1]

    store.update_run(versions[0].run_id, folder="")  # a version saved without its per-row result
    outcome = compare_versions(store, versions[0], versions[1], "classification")
    assert outcome["test"] is None and "cannot be tested" in outcome["sentences"][0]


def test_prompt_builder_figures():
    budget = {"context_length": 1000, "system": 100, "examples": [50, 60], "row_markup": 10, "row_max": 80,
              "answer": 5, "worst_case": 305}
    fig = budget_figure(budget)
    assert [t.x[0] for t in fig.data] == [100, 110, 90, 5, 695]
    assert sum(t.x[0] for t in fig.data) == 1000
    shares = shares_figure({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}, raw={"a": 1.0, "b": 0.0})
    assert [t.name for t in shares.data] == ["true answers", "model", "model, uncalibrated"]
    assert list(shares.data[2].y) == [100.0, 0.0]
    import pandas as pd

    history = pd.DataFrame({"version": [1, 2], "name": ["v1", "v2"], "accuracy": [40.0, 55.0],
                            "macro_f1": [30.0, 50.0], "spread": [float("nan"), 4.0]})
    fig = version_history_figure(history, "accuracy", "macro_f1")
    whiskers = list(fig.data[0].error_y.array)
    assert list(fig.data[0].x) == ["v1", "v2"] and np.isnan(whiskers[0]) and whiskers[1] == 4.0  # only where measured
