"""`python -m pvf_core compare`: the contract's keys, a report, predictions, and the job path."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from pvf_core.cli import cli
from pvf_core.samples import sample_rows


@pytest.fixture
def sample_files(tmp_path):
    rows = pd.DataFrame(sample_rows(160, seed=3), columns=["message", "team"])
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    rows.iloc[:120].to_csv(train, index=False)
    rows.iloc[120:].to_csv(test, index=False)
    return train, test


def run_compare(args):
    result = CliRunner().invoke(cli, ["compare", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_compare_meets_the_contract(sample_files, tiny_model_dir, tmp_path):
    train, test = sample_files
    out = run_compare(["--train", str(train), "--test", str(test), "--model", str(tiny_model_dir), "--shots", "0,2",
                       "--epochs", "1", "--limit", "20", "--output", str(tmp_path / "cmp"),
                       "--predictions", str(tmp_path / "p.csv")])
    assert [a["arm"] for a in out["arms"]] == ["zero-shot", "2-shot balanced", "LoRA r=8"]
    for arm in out["arms"]:
        assert {"arm", "task", "n_test", "metrics", "seconds", "ms_per_example", "peak_rss_mb"} <= set(arm)
        assert arm["n_test"] == 20 and 0 <= arm["metrics"]["accuracy"] <= 1
    assert len(out["significance"]) == 3 and all("p_value" in t for t in out["significance"])
    assert out["recommendation"]["arm"] in {a["arm"] for a in out["arms"]}
    assert out["recommendation"]["reasons"]
    assert out["recommendation"]["rule"]["metric"] in ("accuracy", "macro_f1")
    assert all(a["cost"]["computed_tokens_per_query"] for a in out["arms"])
    assert (tmp_path / "cmp" / "report.html").is_file() and out["report"].endswith("report.html")
    assert out["world_size"] == 1 and out["device"] == "cpu"
    predictions = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(predictions.columns) == ["text", "label", "prediction_zero-shot", "prediction_2-shot balanced",
                                         "prediction_LoRA r=8"]
    truth = pd.read_csv(test, keep_default_na=False).head(20)
    assert predictions["text"].tolist() == truth["message"].tolist()
    for arm in out["arms"]:  # the metrics are recomputable from the file
        recomputed = (predictions[f"prediction_{arm['arm']}"] == predictions["label"]).mean()
        assert recomputed == pytest.approx(arm["metrics"]["accuracy"])


def test_compare_rejects_bad_shots(sample_files):
    train, test = sample_files
    result = CliRunner().invoke(cli, ["compare", "--train", str(train), "--test", str(test), "--shots", "a,b"])
    assert result.exit_code == 2 and "--shots" in result.stderr


def test_standard_comparison_runs_as_a_job_and_reopens(tiny_model_dir):
    from pvf_core import jobs
    from pvf_core.compare import Comparison, start_comparison
    from pvf_core.samples import register_sample

    dataset = register_sample()
    run_id = start_comparison(dataset, model=str(tiny_model_dir), shots=[0], max_train=64, limit=16)
    status = jobs.wait(run_id, timeout=300)
    assert status.status == "done", status.error
    comparison = Comparison.load(jobs.run_folder(run_id))
    assert [r.arm for r in comparison.results] == ["zero-shot", "LoRA r=8"]
    assert all(r.n_test == 16 for r in comparison.results)
    events = jobs.read_progress(run_id)
    assert any(e.get("event") == "progress" and e.get("percent", 0) > 0 for e in events)


def test_a_text_to_text_comparison_reports_the_unchanged_input(tmp_path, tiny_model_dir):
    from pvf_core.metrics import text_metrics

    words = ["cat", "dog", "sun", "sea", "owl", "fox", "elk", "yak"] * 4
    rows = pd.DataFrame({"input": [f"make {w} loud" for w in words], "output": [f"make {w.upper()} loud" for w in words]})
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    rows.iloc[:24].to_csv(train, index=False)
    rows.iloc[24:].to_csv(test, index=False)
    out = run_compare(["--train", str(train), "--test", str(test), "--model", str(tiny_model_dir), "--shots", "0",
                       "--epochs", "1", "--output", str(tmp_path / "cmp"), "--input-column", "input",
                       "--output-column", "output"])
    assert out["task"] == "text-to-text" and {"chrf", "exact_match"} <= set(out["arms"][0]["metrics"])
    expected = text_metrics(list(rows.iloc[24:]["output"]), list(rows.iloc[24:]["input"]))
    assert out["unchanged_input"] == pytest.approx(expected)
    assert any("leaving the text unchanged" in r for r in out["recommendation"]["reasons"])
