"""``python -m pvf_core predict``: answer an unlabelled CSV with a saved prompt version, an adapter or a prompt."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from pvf_core.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def unlabelled(tmp_path):
    path = tmp_path / "new.csv"
    pd.DataFrame({"id": [1, 2, 3], "message": ["My invoice is wrong", "The app crashes", "Where is my parcel?"]}) \
        .to_csv(path, index=False)
    return path


@pytest.fixture
def saved_version(tiny_model_dir, monkeypatch):
    """The sample dataset with one kept 2-shot prompt version, scored by the tiny model."""
    from pvf_core.compare import keep_prompt_version
    from pvf_core.evaluate import Arm, evaluate
    from pvf_core.models import load_model
    from pvf_core.prompting import PromptSpec
    from pvf_core.samples import register_sample
    from pvf_core.store import Store

    store = Store()
    dataset = register_sample(store)
    spec = PromptSpec(instruction="Which team handles this message?", labels=list(dataset.splits.labels), shots=2)
    test = dataset.splits.test.head(12)
    result = evaluate(Arm("2-shot", spec, model=str(tiny_model_dir)), test, task="classification",
                      train=dataset.splits.train, loaded=load_model(str(tiny_model_dir)))
    version = keep_prompt_version(store, dataset.id, spec, result)
    return version, result, test


def test_prompt_version_answers_and_reproduces_the_kept_predictions(saved_version, tmp_path):
    version, result, test = saved_version
    source, out = tmp_path / "rows.csv", tmp_path / "out.csv"
    test[["text"]].to_csv(source, index=False)
    done = invoke("predict", "--prompt-version", version.id, source, "--output", out, "--json")
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"n", "predictions_csv", "seconds"} <= set(answer)
    assert answer["n"] == len(test) and answer["predictions_csv"] == str(out)
    rows = pd.read_csv(out, keep_default_na=False)
    assert list(rows["prediction"]) == result.predictions  # same prompt, same calibration, row by row
    assert {f"p_{label}" for label in result.spec["labels"]} <= set(rows.columns)


def test_adapter_option_takes_an_export_folder(saved_version, unlabelled, workspace):
    from pvf_core.export import export_prompt_version

    version, result, _ = saved_version
    folder = export_prompt_version(version.id)
    done = invoke("predict", "--adapter", folder, unlabelled, "--json")
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["n"] == 3 and answer["predictions_csv"].startswith(str(workspace))
    assert answer["text_column"] == "message"  # the column with the longest texts
    rows = pd.read_csv(answer["predictions_csv"], keep_default_na=False)
    assert list(rows.columns[:3]) == ["id", "message", "prediction"]
    assert set(rows["prediction"]) <= set(result.spec["labels"])


def test_zero_shot_prompt_file(tiny_model_dir, unlabelled, tmp_path):
    spec = tmp_path / "prompt.json"
    spec.write_text(json.dumps({"instruction": "Which team?", "labels": ["billing", "technical"]}))
    done = invoke("predict", "--prompt", spec, unlabelled, "--model", tiny_model_dir, "--text-column", "message",
                  "--json")
    assert done.exit_code == 0, done.output
    rows = pd.read_csv(json.loads(done.stdout.strip().splitlines()[-1])["predictions_csv"])
    assert len(rows) == 3 and set(rows["prediction"]) <= {"billing", "technical"}


@pytest.mark.parametrize("args, phrase", [
    ([], "exactly one of"),
    (["--prompt-version", "99"], "no prompt version 99"),
    (["--prompt", "PROMPT"], "lists no labels"),
    (["--prompt", "PROMPT", "--text-column", "nope"], "no column 'nope'"),
])
def test_bad_input_exits_2_with_one_plain_line(args, phrase, unlabelled, tmp_path):
    prompt = tmp_path / "p.json"
    prompt.write_text(json.dumps({"instruction": "Which team?"}))
    if "--text-column" in args:
        prompt.write_text(json.dumps({"instruction": "Which team?", "labels": ["a", "b"]}))
    done = invoke("predict", *[str(prompt) if a == "PROMPT" else a for a in args], unlabelled)
    assert done.exit_code == 2, done.output
    assert phrase in done.output and len(done.output.strip().splitlines()) == 1


def test_a_file_that_is_not_a_csv_exits_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01\x02" * 100)
    prompt = tmp_path / "p.json"
    prompt.write_text(json.dumps({"instruction": "Which team?", "labels": ["a", "b"]}))
    done = invoke("predict", "--prompt", prompt, bad)
    assert done.exit_code == 2 and len(done.output.strip().splitlines()) == 1
