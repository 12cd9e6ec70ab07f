"""Portable export: predict.py, run on its own in a subprocess, gives the predictions PvF Studio reported."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import toy_reviews
from pvf_core.evaluate import Arm, evaluate
from pvf_core.export import (BUNDLED_HUB_ID, ArmPackage, apply_calibration, export_arm, hub_id, predict_texts)
from pvf_core.prompting import PromptSpec


def run_predict(folder: Path, base: Path | str, rows: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """Run the export's predict.py as a user would: a plain python, only --base-model given."""
    source, target = tmp_path / "input.csv", tmp_path / "output.csv"
    rows.to_csv(source, index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVF_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH="")  # nothing of PvF Studio on the path
    done = subprocess.run([sys.executable, str(folder / "predict.py"), "--base-model", str(base), str(source),
                           str(target)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.read_csv(target, keep_default_na=False, dtype=str)


@pytest.fixture(scope="module")
def toy():
    return toy_reviews(60, seed=1), toy_reviews(24, seed=2)


@pytest.mark.parametrize("spec", [
    PromptSpec(instruction="Is the review positive or negative?", shots=2, selection="balanced"),  # auto calibration
    PromptSpec(instruction="Is the review positive or negative?", shots=3, selection="similar", calibration="none"),
    PromptSpec(shots=0, calibration="content-free", verbalizers={"positive": "good", "negative": "bad"}),
], ids=["balanced-batch", "similar-none", "zero-content-free"])
def test_predict_py_reproduces_the_reported_predictions(spec, toy, tiny_model, tiny_model_dir, tmp_path):
    train, test = toy
    arm = Arm(spec.name(), spec, model=str(tiny_model_dir))
    result = evaluate(arm, test, task="classification", train=train, loaded=tiny_model)
    folder = export_arm(tmp_path / "export", arm, result, train=train, loaded=tiny_model)

    for name in ("predict.py", "prompt.txt", "prompt.json", "calibration.json", "README.md", "scores.json"):
        assert (folder / name).is_file(), name
    assert not (folder / "adapter_config.json").exists()  # a prompt arm has no adapter
    out = run_predict(folder, tiny_model_dir, test, tmp_path)
    assert list(out.columns[:3]) == ["text", "label", "prediction"]
    assert list(out["prediction"]) == result.predictions
    # the probabilities agree too (4 decimals in the file)
    for label in ("positive", "negative"):
        reported = [round(s[label], 4) for s in result.label_scores]
        assert [float(x) for x in out[f"p_{label}"]] == pytest.approx(reported, abs=2e-3)

    # PvF Studio's own engine answers with the export the same way, each row on its own
    package = ArmPackage.load(folder)
    answers = predict_texts(package, list(test["text"]), model=str(tiny_model_dir), loaded=tiny_model)
    assert answers.predictions == result.predictions
    one = predict_texts(package, [test["text"].iloc[5]], model=str(tiny_model_dir), loaded=tiny_model)
    assert one.predictions == [result.predictions[5]]  # a prediction never depends on other rows


def test_the_calibration_is_exported_as_its_fixed_bias(toy, tiny_model, tiny_model_dir, tmp_path):
    import numpy as np

    train, test = toy
    spec = PromptSpec(shots=2, selection="random", calibration="fitted")
    arm = Arm(spec.name(), spec, model=str(tiny_model_dir))
    result = evaluate(arm, test, task="classification", train=train, loaded=tiny_model)
    folder = export_arm(tmp_path / "e", arm, result, train=train, loaded=tiny_model)
    calibration = json.loads((folder / "calibration.json").read_text())
    assert calibration == json.loads(json.dumps(result.calibration_fit))  # what the harness fitted, unchanged
    assert calibration["method"] == "fitted" and calibration["fitted_on"] == "train"
    raw = [[row[label] for label in calibration["labels"]] for row in result.raw_label_scores]
    probs = apply_calibration(np.log(np.array(raw)), calibration["log_bias"])
    expected = [[row[label] for label in calibration["labels"]] for row in result.label_scores]
    np.testing.assert_allclose(probs, expected, atol=1e-9)
    prompt = json.loads((folder / "prompt.json").read_text())
    assert len(prompt["examples"]["items"]) == 2 and prompt["base_model"] == str(Path(tiny_model_dir).resolve())
    text = (folder / "prompt.txt").read_text()
    assert PromptSpec.from_dict(result.spec).system_message() in text and "{text}" in text


def test_a_row_whose_text_is_an_example_gets_the_swapped_examples(toy, tiny_model, tiny_model_dir, tmp_path):
    """The harness never shows a row its own text as an example; predict.py swaps it the same way."""
    train, test = toy
    spec = PromptSpec(shots=4, selection="balanced")
    arm = Arm(spec.name(), spec, model=str(tiny_model_dir))
    from pvf_core.prompting import examples_for, select_examples

    shown = examples_for(train, select_examples(spec, train, [""])[0])
    rows = pd.concat([test.head(6), pd.DataFrame({"text": [t for t, _ in shown[:2]], "label": [l for _, l in shown[:2]]})],
                     ignore_index=True)
    result = evaluate(arm, rows, task="classification", train=train, loaded=tiny_model)
    folder = export_arm(tmp_path / "swap", arm, result, train=train, loaded=tiny_model)
    from pvf_core.export import package_examples

    picked = package_examples(json.loads((folder / "prompt.json").read_text()), list(rows["text"]))
    harness = [examples_for(train, ids) for ids in select_examples(spec, train, list(rows["text"]))]
    assert picked == [list(map(tuple, h)) for h in harness] and picked[-1] != picked[0]
    out = run_predict(folder, tiny_model_dir, rows, tmp_path)
    assert list(out["prediction"]) == result.predictions


def test_text_to_text_export_reproduces_the_answers(tiny_model, tiny_model_dir, tmp_path):
    rows = pd.DataFrame({"text": ["fix this sentense", "the dog run fast", "i has a cat"],
                         "label": ["fix this sentence", "the dog runs fast", "i have a cat"]})
    spec = PromptSpec(task="text-to-text", instruction="Correct the grammar.", max_answer_tokens=8)
    arm = Arm("zero-shot", spec, model=str(tiny_model_dir))
    result = evaluate(arm, rows, task="text-to-text", loaded=tiny_model)
    folder = export_arm(tmp_path / "t2t", arm, result, loaded=tiny_model)
    out = run_predict(folder, tiny_model_dir, rows, tmp_path)
    assert list(out["prediction"]) == result.predictions


def test_an_adapter_is_exported_with_the_hub_id_and_reproduces(toy, tiny_model, tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(adapter, safe_serialization=True)
    train, test = toy
    spec = PromptSpec(instruction="Is the review positive or negative?")
    arm = Arm("LoRA", spec, model=str(tiny_model_dir), adapter=str(adapter))
    result = evaluate(arm, test, task="classification")
    folder = export_arm(tmp_path / "lora", arm, result)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == hub_id(str(tiny_model_dir))
    assert (folder / "adapter_model.safetensors").is_file()
    assert hub_id(str(tiny_model_dir)) in (folder / "README.md").read_text()
    out = run_predict(folder, tiny_model_dir, test, tmp_path)
    assert list(out["prediction"]) == result.predictions


def test_hub_id_of_models(tmp_path):
    from pvf_core.models import CONVERTED_NAME, model_cache_dir

    assert hub_id("bundled") == BUNDLED_HUB_ID
    assert hub_id("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert hub_id(str(model_cache_dir() / CONVERTED_NAME)) == BUNDLED_HUB_ID
    named = tmp_path / "named"
    named.mkdir()
    (named / "config.json").write_text(json.dumps({"_name_or_path": "org/some-model"}))
    assert hub_id(str(named)) == "org/some-model"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"_name_or_path": "/home/me/model"}))
    assert hub_id(str(plain)) == str(plain.resolve())


def test_predict_py_needs_only_torch_transformers_and_peft():
    source = (Path(__file__).resolve().parent.parent / "pvf_core" / "assets" / "predict.py").read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines()
                if line.strip().startswith(("import ", "from ")) and not line.strip().startswith("from __future__")}
    assert imported <= {"argparse", "copy", "csv", "inspect", "json", "math", "re", "sys", "collections", "pathlib", "torch",
                        "transformers", "peft"}, imported


def test_finetune_output_is_a_portable_export(tiny_learner_dir, toy_csvs, tmp_path, one_thread):
    from click.testing import CliRunner

    from pvf_core.cli import cli

    train, test = toy_csvs
    out, predictions = tmp_path / "adapter", tmp_path / "reported.csv"
    done = CliRunner().invoke(cli, [str(a) for a in (
        "finetune", "--train", train, "--test", test, "--model", tiny_learner_dir, "--limit", 12, "--output", out,
        "--predictions", predictions, "--learning-rate", "0.01", "--epochs", "1", "--json")])
    assert done.exit_code == 0, done.output
    for name in ("adapter_config.json", "adapter_model.safetensors", "predict.py", "prompt.txt", "prompt.json",
                 "README.md", "calibration.json"):
        assert (out / name).is_file(), name
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == hub_id(str(tiny_learner_dir)) and base in (out / "README.md").read_text()
    reported = pd.read_csv(predictions, keep_default_na=False, dtype=str)
    got = run_predict(out, tiny_learner_dir, reported[["text"]], tmp_path)
    assert list(got["prediction"]) == list(reported["prediction"])
    # PvF Studio itself still loads the folder (its adapter config now names a hub id, not a path)
    again = CliRunner().invoke(cli, ["predict", "--adapter", str(out), str(predictions), "--model",
                                     str(tiny_learner_dir), "--output", str(tmp_path / "again.csv"), "--json"])
    assert again.exit_code == 0, again.output
    assert list(pd.read_csv(tmp_path / "again.csv", keep_default_na=False, dtype=str)["prediction"]) == \
        list(reported["prediction"])


@pytest.mark.slow
def test_bundled_model_export_reproduces_the_reported_predictions(tmp_path):
    """SST-2, 4 balanced examples, batch calibration, 48 test rows: predict.py with the converted bundled model.

    In float32 both sides agree row for row. (In bfloat16, PvF Studio's default on CPUs that have it, the
    batched engine and predict.py round differently; on these rows 1 of 48 near-tied rows flipped.)
    """
    import torch

    from conftest import dataset_path
    from pvf_core.data import load_splits
    from pvf_core.models import convert_bundled, load_model

    splits, _ = load_splits(dataset_path("sst2_train.csv"), dataset_path("sst2_test.csv"))
    test = splits.test.head(48)
    spec = PromptSpec(instruction="Decide whether the movie review is positive or negative.", shots=4,
                      labels=list(splits.labels))
    arm = Arm(spec.name(), spec)
    loaded = load_model("bundled", dtype=torch.float32)
    result = evaluate(arm, test, task="classification", train=splits.train, loaded=loaded)
    folder = export_arm(tmp_path / "export", arm, result, train=splits.train, loaded=loaded)
    prompt = json.loads((folder / "prompt.json").read_text())
    assert prompt["base_model"] == BUNDLED_HUB_ID and prompt["dtype"] == "float32"
    out = run_predict(folder, convert_bundled(), test, tmp_path)
    assert list(out["prediction"]) == result.predictions
