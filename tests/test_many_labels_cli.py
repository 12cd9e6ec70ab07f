"""A 150-label comparison and inspect through the CLI (tiny model): classification, the contract's keys."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from pvf_core.cli import cli

LABELS = [f"{d}_{a}" for d in ("card", "transfer", "cash", "account", "loan", "pin", "fee", "refund", "top_up",
                                "exchange") for a in ("arrival", "lost", "declined", "pending", "limit", "fee",
                                                      "cancel", "verify", "change", "request", "failed",
                                                      "reversed", "charge", "info", "status")]


@pytest.fixture
def intent_files(tmp_path):
    assert len(LABELS) == 150
    rows = [(f"message {k} about my {label.replace('_', ' ')}", label) for k in range(3) for label in LABELS]
    frame = pd.DataFrame(rows, columns=["text", "intent"])
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:300].to_csv(train, index=False)
    frame.iloc[300:].sample(frac=1, random_state=0).to_csv(test, index=False)
    return train, test


def run(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_inspect_says_classification_and_why(intent_files):
    out = run("inspect", str(intent_files[0]))
    assert out["task"] == "classification" and len(out["labels"]) == 150
    assert out["task_reason"].startswith("150 different short answers")


def test_a_150_label_comparison_meets_the_contract(intent_files, tiny_model_dir, tmp_path):
    train, test = intent_files
    out = run("compare", "--train", str(train), "--test", str(test), "--model", str(tiny_model_dir), "--shots", "0,2",
              "--epochs", "1", "--limit", "12", "--max-train", "160", "--output", str(tmp_path / "cmp"),
              "--predictions", str(tmp_path / "p.csv"))
    assert [a["arm"] for a in out["arms"]] == ["zero-shot", "2-shot similar", "LoRA r=8"]
    for arm in out["arms"]:
        assert {"arm", "task", "n_test", "metrics", "seconds", "ms_per_example", "peak_rss_mb"} <= set(arm)
        assert arm["task"] == "classification" and arm["n_test"] == 12
        assert 0 <= arm["metrics"]["accuracy"] <= 1 and 0 <= arm["metrics"]["macro_f1"] <= 1
    assert out["recommendation"]["arm"] in {a["arm"] for a in out["arms"]} and out["significance"]
    predictions = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    for arm in out["arms"]:  # every answer is one of the labels, and the accuracy is recomputable
        assert set(predictions[f"prediction_{arm['arm']}"]) <= set(LABELS)
        recomputed = (predictions[f"prediction_{arm['arm']}"] == predictions["label"]).mean()
        assert recomputed == pytest.approx(arm["metrics"]["accuracy"])
    report = (tmp_path / "cmp" / "report.html").read_text()
    assert "most confused pairs" in report
