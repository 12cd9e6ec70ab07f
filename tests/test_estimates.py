"""Estimates scale with the chosen model: read from its config, without loading its weights."""

from __future__ import annotations

import json

import pytest

from pvf_core import finetune
from pvf_core.data import Splits
from pvf_core.finetune import preset_settings
from pvf_core.models import model_facts, resolve

from conftest import toy_reviews

# SmolLM2-360M-Instruct's shape (362M parameters), SmolLM2-135M's tokenizer
CONFIG_360M = {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 15,
               "num_key_value_heads": 5, "max_position_embeddings": 8192, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def model_360m(tmp_path_factory):
    """A randomly initialised model of about 360M parameters, saved (float32, as the bundled model) in a tmp folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    bundled = resolve("bundled")
    config = AutoConfig.from_pretrained(bundled)
    for key, value in CONFIG_360M.items():
        setattr(config, key, value)
    folder = tmp_path_factory.mktemp("random-360m")
    torch.manual_seed(0)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.tie_weights()
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(bundled).save_pretrained(folder)
    return folder


def splits() -> Splits:
    return Splits(train=toy_reviews(200, seed=1), validation=toy_reviews(40, seed=2), test=toy_reviews(50, seed=3),
                  task="classification")


@pytest.mark.slow  # the bundled model's config and tokenizer, a 362M model written to disk
def test_config_facts_without_loading_weights(model_360m):
    facts = model_facts(str(model_360m))
    assert 355e6 < facts.parameters < 370e6
    assert (facts.layers, facts.hidden, facts.context_length) == (32, 960, 8192)
    assert facts.file_mb > 1300  # float32 on disk
    bundled = model_facts("bundled")
    assert bundled.parameters == 134_515_008 and bundled.layers == 30


@pytest.mark.slow  # the bundled model's config and tokenizer, a 362M model written to disk
def test_a_360m_model_is_estimated_at_least_twice_the_bundled_one(model_360m, workspace, monkeypatch):
    monkeypatch.setattr(finetune, "_available_mb", lambda: 64_000.0)
    settings = preset_settings("quick")
    small = finetune.estimate(settings, splits(), "bundled", calibrate=False)
    large = finetune.estimate(settings, splits(), str(model_360m), calibrate=False)
    assert small.rough and large.rough
    print(f"rough estimate, 360M vs bundled: {large.total_seconds} s vs {small.total_seconds} s "
          f"({large.total_seconds / small.total_seconds:.2f}x), {large.peak_mb} MB vs {small.peak_mb} MB "
          f"({large.peak_mb / small.peak_mb:.2f}x)")
    assert large.total_seconds >= 2 * small.total_seconds
    assert large.peak_mb >= 2 * small.peak_mb
    assert large.model["parameters"] > 2.5 * small.model["parameters"]
    assert "rough guess" in " ".join(large.messages) and large.calibration_seconds > small.calibration_seconds > 0
    assert large.summary() == {"seconds": large.total_seconds, "peak_mb": large.peak_mb, "rough": True}


@pytest.mark.slow  # the bundled model's config and tokenizer, a 362M model written to disk
def test_a_model_that_does_not_fit_is_said_so(model_360m, workspace, monkeypatch):
    monkeypatch.setattr(finetune, "_available_mb", lambda: 2_000.0)
    found = finetune.estimate(preset_settings("quick"), splits(), str(model_360m), calibrate=False)
    assert not found.fits and "would not fit" in " ".join(found.messages)


def test_calibrations_are_kept_per_model_and_device(tiny_model_dir, workspace, monkeypatch):
    measured = {"step_seconds": 0.1, "token_seconds": 1e-4, "forward_token_seconds": 1e-5, "load_seconds": 1.0,
                "peak_mb": 900.0}
    keys = []

    def fake_run(command, **kwargs):
        keys.append(json.loads(command[-1]))
        return type("Done", (), {"returncode": 0, "stdout": json.dumps(measured), "stderr": ""})()

    monkeypatch.setattr(finetune.estimates.subprocess, "run", fake_run)
    found = finetune.estimate(preset_settings("quick"), splits(), str(tiny_model_dir))
    assert found.calibrated and not found.rough and found.calibration_seconds == 0
    assert keys[0]["model"] == str(tiny_model_dir) and keys[0]["device"] == "cpu"


def test_a_run_keeps_its_prediction_beside_what_it_took(tiny_learner_dir, toy_csvs, workspace, one_thread):
    from click.testing import CliRunner

    from pvf_core.cli import cli
    from pvf_core.store import Store

    train, test = toy_csvs
    done = CliRunner().invoke(cli, ["finetune", "--train", str(train), "--test", str(test), "--model",
                                    str(tiny_learner_dir), "--limit", "8", "--max-train", "40", "--epochs", "1",
                                    "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 1 and result["device"] == "cpu"
    timings = Store().get_run(result["run_id"]).timings
    assert timings["predicted_seconds"] > 0 and timings["predicted_peak_mb"] > 0 and timings["predicted_rough"]
    assert timings["seconds"] == result["seconds"] and timings["world_size"] == 1


def test_the_run_details_show_predicted_against_actual():
    from streamlit.testing.v1 import AppTest

    def page():
        from ui.finetune_result import _predicted_against_actual

        _predicted_against_actual({"predicted_seconds": 120.0, "predicted_peak_mb": 2048.0, "predicted_rough": True,
                                   "seconds": 150.0, "peak_rss_mb": 2560.0})
        _predicted_against_actual({"seconds": 150.0})  # runs from before predictions were kept: nothing

    at = AppTest.from_function(page).run()
    assert [c.value for c in at.caption] == [
        "Predicted (rough guess) against actual: 120 s against 150 s; peak memory 2.0 GB against 2.5 GB."]


def _encoded(labels: int, rows: int = 40):
    """Rows of 3 own tokens whose answers are ``labels`` two-token label words sharing 5 first tokens, + end."""
    from pvf_core.finetune.tokens import Encoded

    answers = [[100 + i % 5, 200 + i, 99] for i in range(labels)]
    return Encoded(prefix=[1, 2], suffixes=[[3, 4, 5]] * rows, answers=[answers[r % labels] for r in range(rows)])


def test_validation_checks_are_counted_as_the_training_loop_scores_them():
    from types import SimpleNamespace

    from pvf_core.finetune.estimates import validation_tokens
    from pvf_core.finetune.loop import LIVE_ACCURACY_MAX_LABELS
    from pvf_core.scoring import answer_trie

    few = _encoded(4)
    spec = SimpleNamespace(task="classification", labels=[f"l{i}" for i in range(4)])
    # every check scores the row and all 4 labels' trie (5 first tokens shared at most: 4 + 4 fed)
    assert validation_tokens(spec, few, 3, 6.0) == 3 * (6.0 - 3 + answer_trie(few.answers[:4]).fed)
    many_labels = LIVE_ACCURACY_MAX_LABELS + 10
    many = _encoded(many_labels, rows=2 * many_labels)
    spec = SimpleNamespace(task="classification", labels=[f"l{i}" for i in range(many_labels)])
    once = validation_tokens(spec, many, 1, 6.0)
    # past LIVE_ACCURACY_MAX_LABELS a further check costs the loss alone: the labels are scored once
    assert validation_tokens(spec, many, 5, 6.0) - once == pytest.approx(4 * 6.0)
    assert once == pytest.approx(6.0 + 6.0 - 3 + answer_trie(many.answers[:many_labels]).fed)
    text = SimpleNamespace(task="text-to-text", labels=[])
    assert validation_tokens(text, few, 3, 6.0) == 18.0
