"""``python -m pvf_core prompt``: the contract in CONTRACT.md (JSON keys, predictions file, exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import ROOT
from pvf_core.cli import cli
from pvf_core.metrics import classification_metrics, text_metrics

CONTRACT_KEYS = {"arm", "task", "n_test", "metrics", "seconds", "ms_per_example", "peak_rss_mb"}


@pytest.fixture
def sentiment_files(tmp_path):
    words = {"positive": ["great", "lovely", "fun", "moving"], "negative": ["boring", "awful", "dull", "weak"]}
    rows = [(f"a {words[label][i % 4]} film number {i}", label)
            for i in range(40) for label in (["positive", "negative"][i % 2],)]
    pd.DataFrame(rows[:28], columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[28:], columns=["text", "label"]).to_csv(tmp_path / "test.csv", index=False, sep=";")
    return tmp_path / "train.csv", tmp_path / "test.csv"


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_prompt_json_and_predictions(sentiment_files, tiny_model_dir, tmp_path):
    train, test = sentiment_files
    out = tmp_path / "predictions.csv"
    result = invoke("prompt", "--train", train, "--test", test, "--shots", 2, "--limit", 10, "--json",
                    "--model", tiny_model_dir, "--predictions", out, "--instruction", "Is the review positive?")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert CONTRACT_KEYS <= set(data)
    assert data["task"] == "classification" and data["n_test"] == 10 and data["arm"] == "2-shot balanced"
    assert {"accuracy", "macro_f1"} <= set(data["metrics"])
    assert data["ms_per_example"] > 0 and data["peak_rss_mb"] > 0 and data["seconds"] >= 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns) == ["text", "label", "prediction"]
    expected_texts = pd.read_csv(test, sep=";")["text"].head(10).tolist()
    assert frame["text"].tolist() == expected_texts  # test-file order
    again = classification_metrics(frame["label"], frame["prediction"], ["negative", "positive"])
    assert again["accuracy"] == pytest.approx(data["metrics"]["accuracy"])
    assert again["macro_f1"] == pytest.approx(data["metrics"]["macro_f1"])


def test_prompt_text_to_text(tmp_path, tiny_model_dir):
    pairs = [(f"he go to school number {i} .", f"He goes to school number {i} .") for i in range(60)]
    pd.DataFrame(pairs[:50], columns=["input", "output"]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(pairs[50:], columns=["input", "output"]).to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "predictions.csv"
    result = invoke("prompt", "--train", tmp_path / "train.csv", "--test", tmp_path / "test.csv", "--shots", 1,
                    "--json", "--model", tiny_model_dir, "--predictions", out)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["task"] == "text-to-text" and data["n_test"] == 10
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns) == ["input", "output", "prediction"]
    again = text_metrics(frame["output"], frame["prediction"])
    assert again["chrf"] == pytest.approx(data["metrics"]["chrf"])
    assert data["unchanged_input"] == pytest.approx(text_metrics(frame["output"], frame["input"]))


def test_plain_summary_names_the_score_and_tips(sentiment_files, tiny_model_dir):
    train, test = sentiment_files
    result = invoke("prompt", "--train", train, "--test", test, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    assert "zero-shot on 12 rows: accuracy" in result.stdout
    assert "no instruction" in result.stdout  # the linter's tip


@pytest.mark.parametrize("args, phrase", [
    (["--shots", "-1"], "at least 0"),
    (["--shots", "2", "--selection", "nearest"], "must be one of"),
    (["--calibration", "magic"], "must be one of"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--shots", "40", "--selection", "random"], "training rows can be used"),
])
def test_bad_options_exit_2_with_one_line(sentiment_files, tiny_model_dir, args, phrase):
    train, test = sentiment_files
    result = invoke("prompt", "--train", train, "--test", test, "--model", tiny_model_dir, *args)
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().split("\n")
    assert len(lines) == 1 and lines[0].startswith("Error: ") and phrase in lines[0], result.stderr


def test_missing_file_exits_2_in_a_real_process(tmp_path, sentiment_files, workspace):
    train, _ = sentiment_files
    env = {**os.environ, "PVF_HOME": str(workspace)}
    env.pop("PVF_RAISE_ERRORS", None)
    done = subprocess.run([sys.executable, "-m", "pvf_core", "prompt", "--train", str(train), "--test",
                           str(tmp_path / "nope.csv"), "--json"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0
    assert "nope.csv" in done.stderr
