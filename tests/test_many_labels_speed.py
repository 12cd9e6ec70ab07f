"""Many labels, fast and exact: pruned scoring keeps every argmax of full scoring (several biases at once,
one query at a time too), the harness prunes from PRUNE_FROM_LABELS labels on with the predictions of scoring
every label, and "auto" calibration does not fit a per-label bias from too few rows per label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pvf_core import calibration as calib
from pvf_core import evaluate as ev
from pvf_core.evaluate import Arm, evaluate
from pvf_core.prompting import PromptSpec
from pvf_core.scoring import one_query_at_a_time, score_labels
from test_scoring import random_labels


def case(tiny32, seed: int, n_labels: int, rows: int = 8):
    rng = np.random.default_rng(seed)
    vocab = min(tiny32.model.config.vocab_size, 200)
    answers = random_labels(rng, n_labels, vocab) + [[7]]
    head = [int(t) for t in rng.integers(3, vocab, size=10)]
    prompts = [head + [int(t) for t in rng.integers(3, vocab, size=rng.integers(1, 7))] for _ in range(rows)]
    return rng, answers, prompts


@pytest.mark.parametrize("seed, n_labels", [(11, 30), (12, 60)])
def test_pruning_with_several_biases_keeps_the_argmax_under_each(tiny32, seed, n_labels):
    rng, answers, prompts = case(tiny32, seed, n_labels)
    full = score_labels(tiny32, prompts, answers)
    calibration = rng.normal(0, 0.3, len(answers))
    calibration[1::3] += 20  # a third of the labels can win under no calibration but never after this one
    biases = np.stack([calibration, np.zeros(len(answers))])
    stats: dict = {}
    pruned = score_labels(tiny32, prompts, answers, prune_bias=biases, stats=stats)
    for bias in biases:
        assert ((pruned - bias).argmax(axis=1) == (full - bias).argmax(axis=1)).all()
    scored = np.isfinite(pruned)
    np.testing.assert_allclose(pruned[scored], full[scored], atol=1e-5)
    assert 0 < stats["labels_scored"] <= 1 and stats["labels_scored"] == pytest.approx(scored.mean())
    # one query at a time, pruned the same way: the same argmax, each row on its own
    alone, timings = one_query_at_a_time(tiny32, prompts, range(len(prompts)), answers=answers, prune_bias=biases)
    for bias in biases:
        assert ((np.stack(alone) - bias).argmax(axis=1) == (full - bias).argmax(axis=1)).all()
    assert len(timings) == len(prompts)


def test_a_confident_row_scores_few_labels_and_a_flat_one_falls_back_to_the_whole_trie(tiny32):
    rng, answers, prompts = case(tiny32, 13, 40)
    full = score_labels(tiny32, prompts, answers)
    # a bias that leaves one label far ahead: only a handful of labels need their full score
    confident = np.full(len(answers), 50.0)
    confident[5] = 0.0
    stats: dict = {}
    pruned = score_labels(tiny32, prompts, answers, prune_bias=confident, stats=stats)
    assert ((pruned - confident).argmax(axis=1) == 5).all()
    assert stats["labels_scored"] < 0.3
    whole: dict = {}
    score_labels(tiny32, prompts, answers, stats=whole)
    assert stats["answer_tokens_per_row"] < whole["answer_tokens_per_row"]  # fewer tokens run
    # equal biases on a random model: many labels stay in the running, rows get the whole trie (exact scores)
    flat = score_labels(tiny32, prompts, answers, prune_bias=np.zeros(len(answers)))
    assert (flat.argmax(axis=1) == full.argmax(axis=1)).all()


def test_auto_calibration_tries_a_fitted_bias_only_with_enough_rows_per_label():
    assert calib.offered_methods(50, 4) == (calib.METHODS, None)
    methods, note = calib.offered_methods(50, 150)
    assert methods == ("none", "content-free") and "50 fitting rows for 150 labels" in note
    labels = [f"l{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 30))
    references = [labels[i] for i in scores.argmax(axis=1)]  # "none" is perfect here
    chosen = calib.choose(labels, scores, references, fitted_on="validation", metric=lambda r, p: np.mean(
        [a == b for a, b in zip(r, p)]), metric_name="accuracy", content_free_scores=np.zeros(30),
        methods=methods, note=note)
    assert chosen.method == "none" and set(chosen.chosen_by["scores"]) == {"none", "content-free"}
    assert chosen.summary() == {"method": "none", "fitted_on": "validation", "rows": 20, "note": note}
    assert calib.Calibration.from_dict(chosen.to_dict()).summary() == chosen.summary()  # saved with the arm


def many_label_frames(n_labels: int = 24):
    labels = [f"topic{i % 6}_act{i // 6}" for i in range(n_labels)]
    train = pd.DataFrame({"text": [f"my {label.replace('_', ' ')} question {k}" for k in range(2) for label in labels],
                          "label": [label for _ in range(2) for label in labels]})
    test = pd.DataFrame({"text": [f"about {labels[i]} please" for i in range(0, n_labels, 2)],
                         "label": [labels[i] for i in range(0, n_labels, 2)]})
    return labels, train, test


def test_the_harness_prunes_many_labels_with_the_predictions_of_scoring_every_label(tiny32, monkeypatch):
    labels, train, test = many_label_frames()
    assert len(labels) >= ev.PRUNE_FROM_LABELS
    arm = Arm("zero-shot", PromptSpec(labels=labels, calibration="content-free"))
    pruned = evaluate(arm, test, task="classification", train=train, loaded=tiny32)
    monkeypatch.setattr(ev, "PRUNE_FROM_LABELS", 10**6)  # score every label
    full = evaluate(arm, test, task="classification", train=train, loaded=tiny32)
    assert pruned.predictions == full.predictions
    assert pruned.metrics["raw"] == full.metrics["raw"]  # the raw argmax is exact too
    assert pruned.calibration_fit == full.calibration_fit
    for p, f in zip(pruned.label_scores, full.label_scores):  # a label not scored shows 0, never more
        assert max(p, key=p.get) == max(f, key=f.get) and all(p[k] == 0 or p[k] >= f[k] - 1e-6 for k in p)
    codes = {w["code"] for w in pruned.warnings}
    assert ("labels_pruned" in codes) == any(0 in s.values() for s in pruned.label_scores)


def test_auto_calibration_with_many_labels_says_why_it_did_not_fit_a_bias(tiny32, monkeypatch):
    labels, train, test = many_label_frames()
    arm = Arm("zero-shot", PromptSpec(labels=labels))  # auto
    result = evaluate(arm, test, task="classification", train=train, loaded=tiny32)
    assert result.calibration["method"] in ("none", "content-free") and result.calibration["rows"] == len(train)
    assert "48 fitting rows for 24 labels" in result.calibration["note"]
    assert set(result.calibration_fit["chosen_by"]["scores"]) == {"none", "content-free"}
    monkeypatch.setattr(ev, "PRUNE_FROM_LABELS", 10**6)  # the fitting rows scored in full choose the same
    again = evaluate(arm, test, task="classification", train=train, loaded=tiny32)
    assert again.calibration_fit == result.calibration_fit and again.predictions == result.predictions


def test_an_arm_whose_fitting_rows_pruned_little_scores_every_label_with_the_same_predictions(tiny32, monkeypatch):
    labels, train, test = many_label_frames()
    arm = Arm("zero-shot", PromptSpec(labels=labels))  # auto: the fitting rows are scored with pruning
    pruned_calls: list[bool] = []
    real = ev.score_labels

    def watching(loaded, prompts, answers, **kw):
        if isinstance(kw.get("on_batch"), ev._Clock):  # the test rows (calibration rows report to a method of it)
            pruned_calls.append(kw.get("prune_bias") is not None)
        return real(loaded, prompts, answers, **kw)

    monkeypatch.setattr(ev, "score_labels", watching)
    monkeypatch.setattr(ev, "PRUNE_PAYS_BELOW", 1.0)  # pruning always pays
    pruned = evaluate(arm, test, task="classification", train=train, loaded=tiny32)
    monkeypatch.setattr(ev, "PRUNE_PAYS_BELOW", -1.0)  # never: the fitting rows' share is above it
    whole = evaluate(arm, test, task="classification", train=train, loaded=tiny32)
    assert pruned_calls == [True, False]
    assert whole.predictions == pruned.predictions and whole.metrics["raw"] == pruned.metrics["raw"]
    assert "labels_pruned" not in {w["code"] for w in whole.warnings}


def test_bench_compare_labels_times_both_comparisons_per_phase(tiny_model_dir, tmp_path):
    import json

    from test_bench import bench

    out = bench("bench_compare_labels.py", "--labels", "3,30", "--model", str(tiny_model_dir), "--train-rows", "80",
                "--test-rows", "8", "--epochs", "1", "--shots", "0,2", "--results-dir", str(tmp_path))
    assert "calibration" in out and "test scoring" in out and "training" in out and "matmul peak" in out
    assert "30 labels take" in out and "the wall time of 3 labels" in out
    [saved] = tmp_path.glob("bench_compare_labels-*.json")
    result = json.loads(saved.read_text())
    assert [r["labels"] for r in result["results"]] == [3, 30]
    for r in result["results"]:
        assert r["wall_seconds"] > 0 and r["cpu_seconds"] > 0 and len(r["arms"]) == 3
        assert any(k.endswith("|test scoring") for k in r["phases"]) and r["phases"]["training"] > 0
    # 30 labels, 72 fitting-eligible rows of which 8 validation rows: "auto" does not fit a per-label bias
    assert any("not tried" in (a["calibration"].get("note") or "") for a in result["results"][1]["arms"])


def test_training_validation_checks_prune_many_labels_and_keep_loss_and_accuracy_exact(tiny32, monkeypatch):
    from pvf_core.finetune import validation_metrics
    from pvf_core.finetune.tokens import encode

    labels = [f"team_{chr(97 + i % 26)}{i}" for i in range(30)]
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"text": [f"message {i} about {labels[int(k)]}" for i, k in
                                   enumerate(rng.integers(0, 30, 12))],
                          "label": [labels[int(k)] for k in rng.integers(0, 30, 12)]})
    spec = PromptSpec(labels=labels)
    val = encode(frame, spec, tiny32.tokenizer, 1024)[0]
    args = (tiny32.model, tiny32.tokenizer, spec, val, int(tiny32.tokenizer.pad_token_id or 0), tiny32.model.device, 4)
    calls: list[int] = []
    real = ev.score_labels

    def counting(loaded, prompts, answers, **kw):
        calls.append((len(answers), kw.get("prune_bias") is not None))
        scores = real(loaded, prompts, answers, **kw)
        if kw.get("prune_bias") is not None:  # as if pruning had skipped every label but the winner
            winner = scores.argmax(axis=1)
            scores = np.where(np.arange(scores.shape[1])[None, :] == winner[:, None], scores, -np.inf)
        return scores

    monkeypatch.setattr(ev, "score_labels", counting)
    pruned = validation_metrics(*args)
    assert calls[0] == (30, True)  # the check scored with pruning
    assert (1, False) in calls  # and a right label that pruning skipped on its own, for the loss
    monkeypatch.setattr(ev, "PRUNE_FROM_LABELS", 10**6)
    full = validation_metrics(*args)
    assert pruned[1] == full[1]
    assert pruned[0] == pytest.approx(full[0], abs=1e-5)
