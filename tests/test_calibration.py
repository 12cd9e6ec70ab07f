"""Calibration is fitted once off the test rows and applied row by row: a row's prediction never depends on
which other rows are scored, in any kind of arm; test labels never influence a prediction or a choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pvf_core import calibration as calib
from pvf_core.calibration import Calibration
from pvf_core.evaluate import Arm, evaluate
from pvf_core.metrics import classification_metrics
from pvf_core.prompting import PromptSpec, select_examples

LABELS = ["negative", "positive"]


def accuracy(refs, preds):
    return float(np.mean([r == p for r, p in zip(refs, preds)]))


def leaning_scores(rows: int, lean: float, seed: int, rare_share: float = 0.5) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    truth = (rng.random(rows) < rare_share).astype(int)
    signal = np.where(truth[:, None] == np.arange(2)[None, :], 0.6, 0.0)
    scores = signal + np.array([lean, 0.0]) + rng.normal(0, 0.2, (rows, 2))
    return scores, [LABELS[t] for t in truth]


def test_a_fitted_calibration_undoes_a_collapse_on_rows_it_never_saw():
    fit_scores, fit_refs = leaning_scores(200, 3.0, seed=0)
    test_scores, test_refs = leaning_scores(200, 3.0, seed=1)
    cal = calib.fitted(LABELS, fit_scores, fit_refs, "validation")
    raw = [LABELS[i] for i in calib.softmax(test_scores).argmax(1)]
    fixed = [LABELS[i] for i in cal.apply(test_scores).argmax(1)]
    assert raw.count("negative") > 190
    assert accuracy(test_refs, fixed) > 0.85
    np.testing.assert_allclose(cal.apply(test_scores).sum(1), 1.0)


def test_a_fitted_calibration_keeps_a_rare_label_rare():
    rng = np.random.default_rng(1)

    def rows(n):
        truth = (rng.random(n) < 0.1).astype(int)
        scores = np.stack([np.zeros(n), np.where(truth == 1, 1.0, -1.0) + rng.normal(0, 0.8, n) - 1.5], axis=1)
        return scores, [LABELS[t] for t in truth]

    fit_scores, fit_refs = rows(300)
    scores, refs = rows(400)
    cal = calib.fitted(LABELS, fit_scores, fit_refs, "validation")
    predictions = [LABELS[i] for i in cal.apply(scores).argmax(1)]
    assert accuracy(refs, predictions) > 0.85


def test_applying_is_row_by_row():
    scores, refs = leaning_scores(50, 2.0, seed=3)
    cal = calib.fitted(LABELS, scores, refs, "train")
    together = cal.apply(scores)
    for i in (0, 7, 49):
        np.testing.assert_allclose(cal.apply(scores[i:i + 1])[0], together[i])


def test_auto_keeps_raw_scores_when_they_are_best_and_fits_when_the_model_collapses():
    honest, refs = leaning_scores(120, 0.0, seed=4)
    chosen = calib.choose(LABELS, honest, refs, fitted_on="validation", metric=accuracy, metric_name="accuracy")
    assert chosen.method == "none" and chosen.fitted_on == "validation" and chosen.rows == 120
    collapsed, refs = leaning_scores(120, 3.0, seed=5)
    chosen = calib.choose(LABELS, collapsed, refs, fitted_on="validation", metric=accuracy, metric_name="accuracy",
                          content_free_scores=np.array([0.0, 0.0]))
    assert chosen.method == "fitted" and chosen.chosen_by["scores"]["fitted"] > chosen.chosen_by["scores"]["none"]


def test_saved_calibration_round_trips(tmp_path):
    scores, refs = leaning_scores(40, 1.0, seed=6)
    cal = calib.fitted(LABELS, scores, refs, "validation")
    cal.save(tmp_path)
    again = Calibration.load(tmp_path)
    assert again == cal and again.summary() == {"method": "fitted", "fitted_on": "validation", "rows": 40}
    assert Calibration.from_dict({"method": "batch"}).method == "fitted"  # the old name


# -- the harness: a row's answer depends on that row alone ---------------------------------------------------

TEXTS = ["This movie was great", "terrible and boring film, I hated it a lot", "ok", "what a waste of time",
         "Please fix my account now, the login page crashes", "slow delivery", "I loved it", "fun for all ages",
         "the plot made no sense", "a masterpiece", "it was fine I guess", "never again"]


def frames():
    train = pd.DataFrame({"text": [f"training review number {i} {'good' if i % 2 else 'bad'}" for i in range(24)]
                          + ["a masterpiece"],  # also a test text: never shown to that row as an example
                          "label": [LABELS[i % 2] for i in range(24)] + ["positive"]})
    validation = pd.DataFrame({"text": [f"validation review {i} {'nice' if i % 3 else 'awful'}" for i in range(12)],
                               "label": [LABELS[int(i % 3 != 0)] for i in range(12)]})
    test = pd.DataFrame({"text": TEXTS, "label": [LABELS[i % 2] for i in range(len(TEXTS))]})
    return train, validation, test


ARMS = {
    "zero-shot": PromptSpec(labels=LABELS),
    "2-shot balanced": PromptSpec(labels=LABELS, shots=2, selection="balanced"),
    "3-shot random, fitted": PromptSpec(labels=LABELS, shots=3, selection="random", calibration="fitted"),
    "2-shot similar": PromptSpec(labels=LABELS, shots=2, selection="similar"),
    "content-free": PromptSpec(labels=LABELS, shots=1, calibration="content-free"),
}


@pytest.mark.parametrize("name", list(ARMS))
def test_a_rows_prediction_does_not_depend_on_the_other_rows(tiny32, name):
    train, validation, test = frames()
    arm = Arm(name, ARMS[name])
    full = evaluate(arm, test, task="classification", train=train, loaded=tiny32, calibration_rows=validation)
    first = evaluate(arm, test.head(3), task="classification", train=train, loaded=tiny32,
                     calibration_rows=validation)
    alone = evaluate(arm, test.iloc[[9]], task="classification", train=train, loaded=tiny32,
                     calibration_rows=validation)
    assert first.predictions == full.predictions[:3]
    assert alone.predictions == [full.predictions[9]]
    assert first.calibration_fit == full.calibration_fit
    np.testing.assert_allclose([full.label_scores[9][label] for label in LABELS],
                               [alone.label_scores[0][label] for label in LABELS], atol=1e-5)


def test_shuffled_test_labels_change_no_prediction_and_no_choice(tiny32):
    train, validation, test = frames()
    shuffled = test.assign(label=list(reversed(test["label"].tolist())))
    arm = Arm("2-shot", PromptSpec(labels=LABELS, shots=2))
    a = evaluate(arm, test, task="classification", train=train, loaded=tiny32, calibration_rows=validation)
    b = evaluate(arm, shuffled, task="classification", train=train, loaded=tiny32, calibration_rows=validation)
    assert a.predictions == b.predictions and a.calibration_fit == b.calibration_fit


def test_a_saved_calibration_is_applied_as_it_is(tiny32):
    train, validation, test = frames()
    arm = Arm("zero-shot", PromptSpec(labels=LABELS))
    fixed = Calibration("fitted", "validation", 12, LABELS, [5.0, 0.0])  # a strong lean against 'negative'
    result = evaluate(arm, test, task="classification", train=train, loaded=tiny32, calibration=fixed)
    assert result.calibration == {"method": "fitted", "fitted_on": "validation", "rows": 12}
    assert set(result.predictions) == {"positive"}


def test_examples_never_show_a_row_its_own_text_and_ignore_the_other_rows():
    train, _, test = frames()
    spec = PromptSpec(labels=LABELS, shots=4, selection="balanced", seed=3)
    texts = test["text"].tolist()
    together = select_examples(spec, train, texts)
    own = texts.index("a masterpiece")
    assert all(train["text"][i] != "a masterpiece" for i in together[own])
    assert select_examples(spec, train, [texts[own]])[0] == together[own]
    assert select_examples(spec, train, texts[:2]) == together[:2]
    similar = spec.with_(selection="similar")
    assert select_examples(similar, train, texts)[own] == select_examples(similar, train, [texts[own]])[0]


def test_calibration_is_chosen_by_macro_f1_on_unbalanced_rows(tiny32):
    from pvf_core.evaluate import _choice_metric

    name, metric = _choice_metric(["a"] * 9 + ["b"] * 2, ["a", "b"])
    assert name == "macro_f1"
    assert metric(["a", "b"], ["a", "a"]) == classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])["macro_f1"]
    assert _choice_metric(["a", "b"] * 5, ["a", "b"])[0] == "accuracy"
