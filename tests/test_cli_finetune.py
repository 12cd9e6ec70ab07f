"""``python -m pvf_core finetune``: the contract in CONTRACT.md, the job options, and ``accelerate launch``."""

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

PROMPT_KEYS = {"arm", "task", "n_test", "metrics", "seconds", "ms_per_example", "peak_rss_mb"}
FINETUNE_KEYS = PROMPT_KEYS | {"train_seconds", "train_examples_per_second", "adapter_dir", "adapter_mb"}
TINY = ["--learning-rate", "0.01", "--epochs", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_contract_keys_predictions_and_adapter(tiny_learner_dir, toy_csvs, tmp_path, workspace):
    train, test = toy_csvs
    predictions = tmp_path / "out.csv"
    done = invoke("finetune", "--train", train, "--test", test, "--model", tiny_learner_dir, "--limit", 20,
                  "--max-train", 100, "--predictions", predictions, "--json", *TINY)
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert FINETUNE_KEYS <= set(result)
    assert result["task"] == "classification" and result["n_test"] == 20
    assert result["training"]["train_rows"] == 90 and result["training"]["validation_rows"] == 10
    assert result["train_examples_per_second"] > 0 and 0 < result["adapter_mb"] < 5
    folder = result["adapter_dir"]
    assert folder.startswith(str(workspace)) and os.path.isfile(os.path.join(folder, "adapter_model.safetensors"))
    rows = pd.read_csv(predictions, keep_default_na=False)
    assert list(rows.columns) == ["text", "label", "prediction"]
    assert list(rows["text"]) == list(pd.read_csv(test)["text"].head(20))  # test-file order
    assert (rows["label"] == rows["prediction"]).mean() == pytest.approx(result["metrics"]["accuracy"])
    from pvf_core.store import Store

    run = Store().get_run(result["run_id"])
    assert run.status == "done" and run.kind == "finetune" and run.metrics["accuracy"] == result["metrics"]["accuracy"]
    # Calibrated on the 10 validation rows, never the test rows; the arm is kept for later comparisons.
    assert result["calibration"]["fitted_on"] == "validation" and result["calibration"]["rows"] == 10
    assert result["latency_ms"]["rows"] == 20 and result["latency_ms"]["p95"] >= result["latency_ms"]["p50"] > 0
    from pvf_core.compare import comparable_runs

    assert result["run_id"] in [r.id for r in comparable_runs(Store(), None)]


def test_a_saved_adapter_is_rescored_with_its_own_prompt_and_calibration(tiny_learner_dir, toy_csvs, tmp_path):
    train, test = toy_csvs
    out = tmp_path / "run"
    trained = invoke("finetune", "--train", train, "--test", test, "--model", tiny_learner_dir, "--limit", 12,
                     "--max-train", 60, "--output", out, "--predictions", tmp_path / "trained.csv", "--json", *TINY)
    assert trained.exit_code == 0, trained.output
    assert (out / "calibration.json").is_file()
    again = invoke("prompt", "--train", train, "--test", test, "--adapter", out, "--limit", 5,
                   "--predictions", tmp_path / "again.csv", "--json")
    assert again.exit_code == 0, again.output
    result = json.loads(again.stdout.strip().splitlines()[-1])
    assert result["calibration"] == json.loads(trained.stdout.strip().splitlines()[-1])["calibration"]
    first, second = pd.read_csv(tmp_path / "trained.csv"), pd.read_csv(tmp_path / "again.csv")
    assert list(second["prediction"]) == list(first["prediction"].head(5))  # same rows, same answers


def test_output_folder_and_settings_file(tiny_learner_dir, toy_csvs, tmp_path):
    train, test = toy_csvs
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"rank": 4, "alpha": 8, "epochs": 1, "target_modules": "all-linear"}))
    out = tmp_path / "adapter"
    done = invoke("finetune", "--train", train, "--test", test, "--model", tiny_learner_dir, "--limit", 8,
                  "--settings", settings, "--rank", 2, "--output", out, "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["adapter_dir"] == str(out) and result["settings"]["rank"] == 2
    assert result["settings"]["target_modules"] == "all-linear"
    assert json.loads((out / "run.json").read_text())["settings"]["alpha"] == 8


@pytest.mark.parametrize("args, phrase", [
    (["--learning-rate", "5"], "Learning rate must be at most"),
    (["--rank", "0"], "LoRA rank must be at least"),
])
def test_bad_settings_exit_2_with_one_plain_line(tiny_model_dir, toy_csvs, args, phrase):
    train, test = toy_csvs
    env = {**os.environ}
    env.pop("PVF_RAISE_ERRORS", None)
    done = subprocess.run([sys.executable, "-m", "pvf_core", "finetune", "--train", str(train), "--test", str(test),
                           "--model", str(tiny_model_dir), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and phrase in lines[0], done.stderr


def test_single_class_training_data_is_unusable(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("PVF_RAISE_ERRORS", raising=False)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    pd.DataFrame({"text": [f"row {i}" for i in range(30)], "label": ["spam"] * 30}).to_csv(train, index=False)
    pd.DataFrame({"text": ["a", "b"], "label": ["spam", "spam"]}).to_csv(test, index=False)
    done = invoke("finetune", "--train", train, "--test", test, "--model", tiny_model_dir)
    assert done.exit_code == 2 and "same answer" in done.output


def test_estimate_only(tiny_model_dir, toy_csvs):
    train, test = toy_csvs
    done = invoke("finetune", "--train", train, "--test", test, "--model", tiny_model_dir, "--estimate", "--json")
    assert done.exit_code == 0, done.output
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["calibrated"] and found["fits"] and found["steps"] == 28 and found["total_seconds"] > 0
    assert found["messages"][0].startswith("About")
    assert found["estimate"] == {"seconds": found["total_seconds"], "peak_mb": found["peak_mb"], "rough": False}


def test_background_queues_a_job(tiny_learner_dir, toy_csvs):
    from pvf_core import jobs

    train, test = toy_csvs
    done = invoke("finetune", "--train", train, "--test", test, "--model", tiny_learner_dir, "--limit", 8,
                  "--background", "--json", *TINY)
    assert done.exit_code == 0, done.output
    started = json.loads(done.stdout.strip().splitlines()[-1])
    assert started["status"] in ("running", "queued") and started["progress_log"].endswith("progress.jsonl")
    status = jobs.wait(started["run_id"], timeout=300)
    assert status.status == "done", status.error
    assert status.result["n_test"] == 8


def _launch(launcher: list[str], tiny_learner_dir, toy_csvs, output, workspace) -> dict:
    train, test = toy_csvs
    env = {**os.environ, "PVF_HOME": str(workspace), "OMP_NUM_THREADS": "1"}
    env.pop("PVF_RAISE_ERRORS", None)
    done = subprocess.run([*launcher, "-m", "pvf_core", "finetune", "--train", str(train), "--test", str(test),
                           "--model", str(tiny_learner_dir), "--limit", "8", "--output", str(output), "--json", *TINY],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1, done.stdout  # only the main process reports
    assert (output / "adapter_model.safetensors").is_file()
    return results[0]["training"]


def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


@pytest.mark.skipif(not os.path.exists(_tool("accelerate")), reason="accelerate's launcher is not installed")
def test_runs_under_accelerate_launch_on_cpu(tiny_learner_dir, toy_csvs, tmp_path, workspace):
    """The same entry point under `accelerate launch` (on a GPU machine: --multi_gpu --num_processes N)."""
    launcher = [_tool("accelerate"), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no"]
    training = _launch(launcher, tiny_learner_dir, toy_csvs, tmp_path / "accelerate", workspace)
    assert training["train_rows"] == 108 and training["steps"] == 14


@pytest.mark.skipif(not os.path.exists(_tool("torchrun")), reason="torchrun is not installed")
def test_data_parallel_over_two_cpu_processes(tiny_learner_dir, toy_csvs, tmp_path, workspace):
    """Two processes (gloo on CPU, as DDP over GPUs): each takes every other batch, gradients are averaged."""
    training = _launch([_tool("torchrun"), "--nproc_per_node", "2"], tiny_learner_dir, toy_csvs, tmp_path / "ddp",
                       workspace)
    assert training["train_rows"] == 108 and training["steps"] == 7  # 14 batches, one per process per step


def test_merged_writes_a_standalone_model_that_answers_like_the_adapter(tiny_learner_dir, toy_csvs, tmp_path,
                                                                         monkeypatch):
    from pvf_core.evaluate import Arm, evaluate
    from pvf_core.finetune import FinetuneRun

    monkeypatch.setenv("PVF_DTYPE", "float32")  # the merge itself, not bf16 rounding of near-ties
    train, test = toy_csvs
    predictions = tmp_path / "predictions.csv"
    done = invoke("finetune", "--train", train, "--test", test, "--model", tiny_learner_dir, "--limit", 20,
                  "--max-train", 100, "--output", tmp_path / "run", "--predictions", predictions, "--merged",
                  "--json", *TINY)
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout.strip().splitlines()[-1])
    merged = tmp_path / "run" / "merged"
    assert result["merged_dir"] == str(merged)
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()
    assert not (merged / "adapter_config.json").exists()
    for name in ("adapter_config.json", "predict.py", "prompt.txt", "prompt.json", "README.md"):  # the contract
        assert (tmp_path / "run" / name).is_file(), name
    run = FinetuneRun.load(tmp_path / "run")
    standalone = evaluate(Arm("merged", run.prompt_spec(), model=str(merged)), pd.read_csv(test).head(20),
                          task="classification")
    with_adapter = evaluate(run.arm(), pd.read_csv(test).head(20), task="classification")
    assert standalone.predictions == with_adapter.predictions
    for a, b in zip(standalone.raw_label_scores, with_adapter.raw_label_scores):
        assert a == pytest.approx(b, abs=1e-4)
