"""The harness: label scoring (batched, shared-prefix cache), calibration, generation, metrics, results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import dataset_path
from pvf_core.evaluate import (Arm, EvalResult, Stopped, calibrate, evaluate, evaluate_seeds, generate_answers,
                               save_prompt_version, score_labels)
from pvf_core.errors import SettingsError
from pvf_core.metrics import classification_metrics, collapse, text_metrics
from pvf_core.prompting import PromptSpec, Renderer

LABELS = ["negative", "positive", "spam ham"]  # the last one has several tokens
TEXTS = ["This movie was great", "terrible and boring film, I hated it a lot", "ok",
         "Please fix my account now, the login page crashes when I open it", "slow delivery", "I loved it"]


def prompts_and_answers(loaded, shots: int = 0):
    spec = PromptSpec(labels=LABELS, instruction="Decide which label fits the text best.")
    renderer = Renderer(spec, loaded.tokenizer)
    examples = [("fun film", "positive"), ("bad film", "negative")][:shots]
    return ([renderer.prompt_ids(t, examples) for t in TEXTS], [renderer.answer_ids(label) for label in LABELS])


def full_sequence_scores(loaded, prompts, answers) -> np.ndarray:
    """The reference: each prompt + answer run as one plain sequence, no cache, no batching."""
    import torch

    table = np.zeros((len(prompts), len(answers)))
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            for j, answer in enumerate(answers):
                logits = loaded.model(input_ids=torch.tensor([prompt + answer])).logits.float()
                logprobs = torch.log_softmax(logits[0], dim=-1)
                table[i, j] = sum(logprobs[len(prompt) - 1 + t, answer[t]].item() for t in range(len(answer)))
    return table


# -- scoring ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shots", [0, 2])
def test_prefix_cache_equals_no_cache_equals_plain_sequences(tiny32, shots):
    prompts, answers = prompts_and_answers(tiny32, shots)
    assert len({len(a) for a in answers}) > 1  # single- and multi-token answers
    reference = full_sequence_scores(tiny32, prompts, answers)
    cached = score_labels(tiny32, prompts, answers, normalise=False)
    uncached = score_labels(tiny32, prompts, answers, normalise=False, use_prefix_cache=False)
    np.testing.assert_allclose(cached, reference, atol=1e-4)
    np.testing.assert_allclose(uncached, reference, atol=1e-4)


def test_batched_scores_equal_one_by_one(tiny32):
    prompts, answers = prompts_and_answers(tiny32, 2)
    one_by_one = np.stack([score_labels(tiny32, [p], answers)[0] for p in prompts])
    packed = score_labels(tiny32, prompts, answers)  # all rows one after another in one lane
    lanes = score_labels(tiny32, prompts, answers, lane_tokens=1, batch_tokens=10**6)  # a lane per row, one pass
    single = score_labels(tiny32, prompts, answers, lane_tokens=1, batch_tokens=1)  # one row per pass
    for scores in (packed, lanes, single):
        np.testing.assert_allclose(scores, one_by_one, atol=1e-4)


def test_scores_are_normalised_by_answer_length(tiny32):
    prompts, answers = prompts_and_answers(tiny32)
    total = score_labels(tiny32, prompts, answers, normalise=False)
    mean = score_labels(tiny32, prompts, answers)
    np.testing.assert_allclose(mean, total / np.array([len(a) for a in answers]), atol=1e-9)


def test_bf16_scores_stay_close_to_float32(tiny_model, tiny32):
    prompts, answers = prompts_and_answers(tiny32, 2)
    np.testing.assert_allclose(score_labels(tiny_model, prompts, answers), score_labels(tiny32, prompts, answers),
                               atol=0.1)


def test_batches_respect_the_token_and_cache_budgets():
    from pvf_core.evaluate import KV_BUDGET_TOKENS, _batches

    lengths = [5, 30, 10, 30, 12, 7]
    batches = _batches(lengths, batch_tokens=60, max_rows=64)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [1, 3]  # longest first, so little padding
    assert all(len(b) * max(lengths[i] for i in b) <= 60 for b in batches)
    assert all(len(b) == 1 for b in _batches(lengths, 10**6, 64, prefix=KV_BUDGET_TOKENS - 20))
    assert max(len(b) for b in _batches([3] * 100, 10**6, max_rows=16)) == 16


def test_lanes_pack_rows_without_overflow():
    from pvf_core.evaluate import _lanes

    widths = [100, 30, 200, 60, 300, 90, 10]
    lanes = _lanes(widths, 256)
    assert sorted(i for lane in lanes for i in lane) == list(range(len(widths)))
    assert [4] in lanes  # longer than a lane: on its own
    assert all(sum(widths[i] for i in lane) <= 256 for lane in lanes if lane != [4])
    assert len(lanes) == 3  # 300 | 200+30+10 | 100+90+60


def test_progress_and_stop(tiny32):
    prompts, answers = prompts_and_answers(tiny32)
    seen = []
    score_labels(tiny32, prompts, answers, batch_tokens=1, on_batch=lambda rows, s: seen.extend(rows))
    assert sorted(seen) == list(range(len(prompts)))
    with pytest.raises(Stopped):
        score_labels(tiny32, prompts, answers, should_stop=lambda: True)


# -- calibration (the maths is in tests/test_calibration.py) -----------------------------------------------

def test_content_free_calibration_divides_by_the_empty_text_prior():
    scores = np.log(np.array([[0.7, 0.3], [0.9, 0.1]]))
    probs = calibrate(scores, "content-free", np.log(np.array([0.8, 0.2])))
    expected = np.array([[0.7 / 0.8, 0.3 / 0.2], [0.9 / 0.8, 0.1 / 0.2]])
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True))


def test_a_fitted_calibration_cannot_be_made_from_the_rows_it_scores():
    with pytest.raises(SettingsError):
        calibrate(np.zeros((3, 2)), "batch")


# -- metrics ----------------------------------------------------------------------------------------------

def test_classification_metrics():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["confusion"] == [[1, 1], [0, 2]]


def test_text_metrics():
    assert text_metrics(["A cat sat ."], ["A cat sat ."]) == {"chrf": 100.0, "exact_match": 1.0}
    m = text_metrics(["The cat sat on the mat .", "Hello"], ["The cat sat on a mat .", "Hello"])
    assert 50 < m["chrf"] < 100 and m["exact_match"] == 0.5


def test_collapse_flag():
    assert collapse(["a"] * 95 + ["b"] * 5, ["a", "b"] * 50, ["a", "b"])["collapsed"]
    assert not collapse(["a"] * 95 + ["b"] * 5, ["a"] * 90 + ["b"] * 10, ["a", "b"])["collapsed"]


# -- generation -------------------------------------------------------------------------------------------

def test_greedy_generation_matches_transformers_generate(tiny32):
    import torch

    spec = PromptSpec(task="text-to-text", instruction="Correct the grammar of the text.")
    renderer = Renderer(spec, tiny32.tokenizer)
    prompts = [renderer.prompt_ids(t) for t in TEXTS[:4]]
    ours = generate_answers(tiny32, prompts, max_new_tokens=6, stop_ids=renderer.stop_ids(), stop_at_newline=False)
    alone = [generate_answers(tiny32, [p], max_new_tokens=6, stop_ids=renderer.stop_ids(),
                              stop_at_newline=False, use_prefix_cache=False)[0] for p in prompts]
    eos = sorted(renderer.stop_ids())
    for prompt, answer, single in zip(prompts, ours, alone):
        out = tiny32.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                    eos_token_id=eos, pad_token_id=tiny32.tokenizer.pad_token_id)
        expected = tiny32.tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
        assert answer == expected == single


# -- the harness ------------------------------------------------------------------------------------------

def frames():
    train = pd.DataFrame({"text": [f"train text {i} {'great' if i % 2 else 'boring'}" for i in range(20)],
                          "label": ["positive" if i % 2 else "negative" for i in range(20)]})
    test = pd.DataFrame({"text": TEXTS, "label": ["positive", "negative", "positive", "negative", "negative",
                                                  "positive"]})
    return train, test


def test_evaluate_classification(tiny_model):
    train, test = frames()
    arm = Arm("2-shot", PromptSpec(shots=2, instruction="Decide if the review is positive or negative."))
    seen = []
    result = evaluate(arm, test, task="classification", train=train, loaded=tiny_model,
                      on_progress=lambda d, t, m: seen.append((d, t, m)))
    # the 20 training rows the calibration is fitted on count first, so the share done includes that work
    assert result.n_test == 6 and seen[-1] == (26, 26, "Scored 6/6 rows")
    fitting = [m for _, _, m in seen if m.startswith("Calibrating")]
    assert fitting and fitting[-1] == "Calibrating on 20/20 train rows" and seen[len(fitting) - 1][:2] == (20, 26)
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert set(result.predictions) <= {"negative", "positive"}
    assert all(abs(sum(s.values()) - 1) < 1e-6 for s in result.label_scores)
    expected = {"accuracy", "macro_f1", "per_class", "confusion", "labels", "raw", "prediction_shares", "collapse"}
    assert expected <= set(result.metrics)
    assert result.calibration == {"method": result.calibration_fit["method"], "fitted_on": "train", "rows": 20}
    assert len(result.latencies_ms) == 6 and result.latency_ms["rows"] == 6  # each row answered on its own too
    assert result.ms_per_token > 0 and result.memory_mb > 0
    assert result.prompt_tokens_per_row > result.computed_tokens_per_row > 0
    assert result.budget["examples_that_fit"] > 0
    frame = result.predictions_frame()
    assert list(frame.columns[:3]) == ["text", "label", "prediction"] and "p_positive" in frame
    assert list(result.predictions_frame(scores=False).columns) == ["text", "label", "prediction"]
    assert EvalResult(**result.to_dict()).predictions == result.predictions  # JSON round trip


def test_evaluate_text_to_text(tiny_model):
    train, test = frames()
    arm = Arm("zero-shot", PromptSpec(task="text-to-text", max_answer_tokens=5))
    result = evaluate(arm, test, task="text-to-text", train=train, loaded=tiny_model)
    assert set(result.metrics) == {"chrf", "exact_match"} and result.label_scores is None
    assert len(result.predictions) == 6 and all(isinstance(p, str) for p in result.predictions)
    assert list(result.predictions_frame().columns) == ["input", "output", "prediction"]


def test_evaluate_seeds_reports_mean_and_spread(tiny_model):
    train, test = frames()
    arm = Arm("2-shot", PromptSpec(shots=2, selection="random"))
    summary = evaluate_seeds(arm, test, task="classification", train=train, loaded=tiny_model, seeds=[0, 1, 2])
    assert [s["seed"] for s in summary["per_seed"]] == [0, 1, 2]
    assert summary["min"] <= summary["mean"] <= summary["max"] and summary["std"] >= 0
    assert all(r.latencies_ms == [] for r in summary["results"])  # the spread needs no single-query timing
    zero = evaluate_seeds(Arm("0", PromptSpec()), test, task="classification", loaded=tiny_model, seeds=[0, 1])
    assert len(zero["per_seed"]) == 1 and "note" in zero


def test_adapter_arm_scores_like_the_wrapped_model(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from pvf_core.models import load_model

    monkeypatch.setenv("PVF_DTYPE", "float32")
    torch.manual_seed(0)
    base = load_model(str(tiny_model_dir), dtype=torch.float32, fresh=True)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base.model, config).save_pretrained(tmp_path / "adapter")
    train, test = frames()
    arm = Arm("LoRA", PromptSpec(labels=["negative", "positive"], calibration="none"), model=str(tiny_model_dir),
              adapter=str(tmp_path / "adapter"))
    result = evaluate(arm, test, task="classification", train=train)

    fresh = load_model(str(tiny_model_dir), dtype=torch.float32, fresh=True)
    wrapped = PeftModel.from_pretrained(fresh.model, str(tmp_path / "adapter")).eval()
    renderer = Renderer(arm.prompt, fresh.tokenizer)
    expected = score_labels(type(fresh)(fresh.name, wrapped, fresh.tokenizer, fresh.path),
                            [renderer.prompt_ids(t) for t in test["text"]],
                            [renderer.answer_ids(label) for label in arm.prompt.labels])
    plain = score_labels(load_model(str(tiny_model_dir), dtype=torch.float32, fresh=True),
                         [renderer.prompt_ids(t) for t in test["text"]],
                         [renderer.answer_ids(label) for label in arm.prompt.labels])
    got = np.log([[row[label] for label in arm.prompt.labels] for row in result.label_scores])
    np.testing.assert_allclose(got, np.log(calibrate(expected, "none")), atol=1e-4)
    assert not np.allclose(expected, plain, atol=1e-4)  # the adapter changed something


def test_save_prompt_version(tiny_model):
    from pvf_core.store import Store

    train, test = frames()
    store = Store()
    spec = PromptSpec(shots=2)
    result = evaluate(Arm("2-shot", spec), test, task="classification", train=train, loaded=tiny_model)
    first = save_prompt_version(store, None, spec, result)
    second = save_prompt_version(store, None, spec.with_(shots=0), result, name="zero")
    versions = store.list_prompt_versions()
    assert [v.id for v in versions] == [first, second] and versions[1].name == "zero"
    assert versions[0].metrics["accuracy"] == result.metrics["accuracy"]
    assert store.get_run(versions[0].run_id).timings["ms_per_example"] == round(result.ms_per_example, 2)


# -- the bundled model on real data -----------------------------------------------------------------------

@pytest.mark.slow
def test_bundled_model_beats_chance_on_sst2(bundled_model):
    """200 SST-2 test rows, 4 balanced examples, batch calibration: measured 0.715-0.72 over 3 seeds (chance 0.5)."""
    train = pd.read_csv(dataset_path("sst2_train.csv"), keep_default_na=False)
    test = pd.read_csv(dataset_path("sst2_test.csv"), keep_default_na=False).head(200)
    spec = PromptSpec(shots=4, instruction="Decide whether the sentiment of the movie review is positive or negative.")
    result = evaluate(Arm("4-shot", spec), test, task="classification", train=train, loaded=bundled_model)
    assert result.metrics["accuracy"] >= 0.65, result.metrics
    assert result.metrics["accuracy"] >= result.metrics["raw"]["accuracy"]  # calibration helps here
