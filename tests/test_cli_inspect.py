"""``python -m pvf_core inspect``: the contract in CONTRACT.md (JSON keys, exit codes, column options)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import FIXTURES, ROOT, dataset_path
from pvf_core.cli import cli


def run_cli(*args: str, env_home) -> subprocess.CompletedProcess:
    env = {**os.environ, "PVF_HOME": str(env_home)}
    env.pop("PVF_RAISE_ERRORS", None)
    return subprocess.run([sys.executable, "-m", "pvf_core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_one_plain_line(stderr: str, phrase: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip("\n").split("\n")
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and phrase in lines[0], lines[0]


def test_contract_on_sst2_train(tiny_model_dir, workspace):
    done = run_cli("inspect", str(dataset_path("sst2_train.csv")), "--json", "--model", str(tiny_model_dir),
                   env_home=workspace)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip().count("\n") == 0  # exactly one JSON object on stdout
    result = json.loads(done.stdout)
    assert {"rows", "columns", "task", "text_column", "label_column", "labels", "warnings"} <= set(result)
    assert result["rows"] == 6920
    assert result["columns"] == ["text", "label"]
    assert (result["task"], result["text_column"], result["label_column"]) == ("classification", "text", "label")
    assert result["labels"] == {"negative": 3310, "positive": 3610}
    assert isinstance(result["warnings"], list)
    for warning in result["warnings"]:
        assert isinstance(warning["code"], str) and isinstance(warning["message"], str) and warning["message"]
    codes = [w["code"] for w in result["warnings"]]
    assert "duplicates" in codes  # README: 9 repeated texts in sst2 train
    assert "lengths" in codes  # the token-length check ran with the given model's tokenizer
    assert sum(result["split"].values()) == 6920


def test_binary_file_exits_2_with_one_line(tmp_path, tiny_model_dir, workspace):
    fake = tmp_path / "photo.csv"
    fake.write_bytes((FIXTURES / "bad_csv" / "png_renamed.csv").read_bytes())
    done = run_cli("inspect", str(fake), "--json", "--model", str(tiny_model_dir), env_home=workspace)
    assert done.returncode == 2
    assert done.stdout == ""
    assert_one_plain_line(done.stderr, "'photo.csv' does not look like a CSV file: it contains a PNG image.")


def test_missing_file_exits_2(tmp_path, workspace):
    done = run_cli("inspect", str(tmp_path / "nope.csv"), "--json", env_home=workspace)
    assert done.returncode == 2 and done.stdout == ""
    assert_one_plain_line(done.stderr, "There is no file at")


def test_a_folder_exits_2_with_one_line(tmp_path):
    result = invoke("inspect", str(tmp_path), "--json")
    assert result.exit_code == 2
    assert_one_plain_line(result.stderr, "is a folder, not a CSV file")


def test_text_and_label_column_options(tmp_path, tiny_model_dir):
    data = tmp_path / "reviews.csv"
    rows = "".join(f"{i},review number {i} of the film,{'pos' if i % 2 else 'neg'},{'short' if i % 3 else 'long'}\n"
                   for i in range(60))
    data.write_text("id,body,verdict,kind\n" + rows, encoding="utf-8")
    detected = json.loads(invoke("inspect", str(data), "--json", "--model", str(tiny_model_dir)).stdout)
    assert (detected["text_column"], detected["label_column"]) == ("body", "verdict")
    result = invoke("inspect", str(data), "--json", "--model", str(tiny_model_dir),
                    "--text-column", "body", "--label-column", "kind")
    assert result.exit_code == 0, result.stderr
    chosen = json.loads(result.stdout)
    assert (chosen["text_column"], chosen["label_column"], chosen["task"]) == ("body", "kind", "classification")
    assert chosen["labels"] == {"long": 20, "short": 40}
    result = invoke("inspect", str(data), "--json", "--text-column", "nope")
    assert result.exit_code == 2
    assert_one_plain_line(result.stderr, "The text column 'nope' is not in the file. Columns found: id, body")


def test_input_and_output_column_options(tiny_model_dir):
    path = str(dataset_path("jfleg_test.csv"))
    detected = json.loads(invoke("inspect", path, "--json", "--model", str(tiny_model_dir)).stdout)
    assert (detected["task"], detected["text_column"], detected["label_column"]) == ("text-to-text", "input", "output")
    assert "labels" not in detected
    result = invoke("inspect", path, "--json", "--model", str(tiny_model_dir),
                    "--input-column", "output", "--output-column", "input")
    assert result.exit_code == 0, result.stderr
    swapped = json.loads(result.stdout)
    assert (swapped["task"], swapped["text_column"], swapped["label_column"]) == ("text-to-text", "output", "input")
    assert swapped["rows"] == 747


def test_seed_changes_the_split_not_the_counts(tiny_model_dir):
    path = str(dataset_path("trec_test.csv"))
    results = [json.loads(invoke("inspect", path, "--json", "--seed", seed, "--model", str(tiny_model_dir)).stdout)
               for seed in ("1", "2")]
    assert results[0]["labels"] == results[1]["labels"] == {"abbreviation": 9, "description": 138, "entity": 94,
                                                             "human": 65, "location": 81, "numeric": 113}
    assert results[0]["split"] == results[1]["split"]


def test_plain_summary_without_json(tiny_model_dir):
    result = invoke("inspect", str(dataset_path("sms_spam_test.csv")), "--model", str(tiny_model_dir))
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].endswith("1115 rows, task classification (text: 'text', answer: 'label')")
    assert "labels: ham 965, spam 150" in result.stdout


@pytest.mark.slow
def test_default_model_checks_token_lengths(workspace):
    """Without --model the bundled model's tokenizer measures the texts (converted once into the cache)."""
    done = run_cli("inspect", str(dataset_path("jfleg_train.csv")), "--json", env_home=workspace)
    assert done.returncode == 0, done.stderr
    lengths = next(w for w in json.loads(done.stdout)["warnings"] if w["code"] == "lengths")
    assert lengths["numbers"]["context_length"] == 8192
    assert 10 < lengths["numbers"]["median_tokens"] < 60
