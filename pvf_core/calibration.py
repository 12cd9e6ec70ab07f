"""Calibration: a per-label correction fitted once on rows that are never scored, then applied row by row.

A small model leans towards some labels whatever the text says. Calibration divides that leaning out:

    probabilities = softmax(log_softmax(scores) - log_bias)        for each row on its own

``log_bias`` is a fixed vector, one number per label, so a row's prediction depends on that row alone (never
on which other rows are scored), and a deployed arm reproduces the reported predictions one query at a time.

How ``log_bias`` is found:
    none          zeros: the raw scores.
    content-free  the model's label probabilities for an empty text ("N/A"; Zhao et al. 2021).
    fitted        the model's mean label probabilities over the fitting rows (the validation split; the
                  training rows when there is none), divided by how common each label is among those rows'
                  true answers (add-one smoothed). Without that last step a rare label would be pushed up to an
                  equal share (SMS spam, 13% spam: 0.86 → 0.44 zero-shot; with it, 0.85).
    auto          chooses one of the three on the fitting rows (2-fold cross-fitted for "fitted", so the row
                  that fits the bias never judges it), by the deciding metric. Ties go to the simpler method.
                  "fitted" is only tried with at least ``FIT_ROWS_PER_LABEL`` fitting rows per label
                  (``offered_methods``): with 150 labels and 50 rows a per-label bias is noise. The
                  calibration's summary then says so (``note``).

The test rows never take part: not in fitting, not in choosing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import SettingsError

METHODS = ("none", "content-free", "fitted")
CHOICES = ("auto", *METHODS)
FILE = "calibration.json"
FIT_ROWS_MAX = 200  # fitting rows scored per arm: enough to estimate a per-label leaning, cheap to score
FIT_ROWS_PER_LABEL = 5  # "auto" tries a fitted per-label bias only with at least this many fitting rows per label


def log_softmax(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(scores: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(scores))


def normalise_method(method: str) -> str:
    """The calibration asked for, with the old name 'batch' read as 'fitted'."""
    method = {"batch": "fitted"}.get(method, method)
    if method not in CHOICES:
        raise SettingsError(f"Unknown calibration '{method}'; use auto, fitted, content-free or none.")
    return method


@dataclass
class Calibration:
    """A fixed per-label correction and how it was found. Saved beside an arm as ``calibration.json``."""

    method: str = "none"          # none | content-free | fitted
    fitted_on: str | None = None  # validation | train | None (nothing fitted)
    rows: int = 0                 # rows the bias was fitted (and the method chosen) on
    labels: list[str] = field(default_factory=list)
    log_bias: list[float] = field(default_factory=list)
    chosen_by: dict = field(default_factory=dict)  # auto: each method's score on the fitting rows, and the metric

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Label probabilities [rows, labels] from label scores; each row is corrected on its own."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size == 0:
            return scores.reshape(0, len(self.labels))
        bias = np.asarray(self.log_bias or [0.0] * scores.shape[-1], dtype=np.float64)
        return softmax(log_softmax(scores) - bias)

    def summary(self) -> dict:
        """The contract's ``calibration`` object: method, fitted_on, rows (and a ``note`` when "auto" did not
        try every method)."""
        note = (self.chosen_by or {}).get("note")
        return {"method": self.method, "fitted_on": self.fitted_on, "rows": self.rows} | ({"note": note} if note else {})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Calibration":
        data = dict(data or {})
        known = {k: data[k] for k in ("method", "fitted_on", "rows", "labels", "log_bias", "chosen_by") if k in data}
        calibration = cls(**known)
        calibration.method = normalise_method(calibration.method)
        return calibration

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Calibration | None":
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def uncalibrated(labels: Sequence[str]) -> Calibration:
    return Calibration("none", None, 0, list(labels), [0.0] * len(labels))


def content_free(labels: Sequence[str], content_free_scores: np.ndarray) -> Calibration:
    """Divide by the probabilities the model gives an empty text."""
    bias = log_softmax(np.asarray(content_free_scores, dtype=np.float64).reshape(-1))
    return Calibration("content-free", None, 0, list(labels), bias.tolist())


def label_shares(references: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """How common each label is among ``references`` (add-one smoothed, so no label has share 0)."""
    index = {label: i for i, label in enumerate(labels)}
    counts = np.ones(len(labels))
    for ref in references:
        if ref in index:
            counts[index[ref]] += 1
    return counts / counts.sum()


def fitted(labels: Sequence[str], scores: np.ndarray, references: Sequence[str], fitted_on: str) -> Calibration:
    """The model's mean leaning over the fitting rows, relative to how common each label truly is there."""
    probs = softmax(scores)
    leaning = probs.mean(axis=0) / label_shares(references, labels)
    bias = np.log(np.maximum(leaning, 1e-12))
    return Calibration("fitted", fitted_on, len(references), list(labels), (bias - bias.mean()).tolist())


Metric = Callable[[Sequence[str], Sequence[str]], float]


def offered_methods(n_rows: int, n_labels: int) -> tuple[tuple[str, ...], str | None]:
    """The methods "auto" chooses among with ``n_rows`` fitting rows for ``n_labels`` labels, and why one is
    left out (None when all are tried): a fitted bias needs ``FIT_ROWS_PER_LABEL`` rows per label."""
    if n_rows >= FIT_ROWS_PER_LABEL * n_labels:
        return METHODS, None
    return ("none", "content-free"), (f"'fitted' was not tried: {n_rows} fitting rows for {n_labels} labels "
                                      f"({n_rows / max(n_labels, 1):.1f} per label) are too few to fit a bias per "
                                      f"label (it needs at least {FIT_ROWS_PER_LABEL} per label).")


def choose(labels: Sequence[str], scores: np.ndarray, references: Sequence[str], *, fitted_on: str,
           metric: Metric, metric_name: str, content_free_scores: np.ndarray | None = None,
           methods: Sequence[str] = METHODS, note: str | None = None) -> Calibration:
    """Pick the calibration that scores best on the fitting rows (never the test rows).

    "fitted" is judged by 2-fold cross-fitting: the bias fitted on one half predicts the other half, so it
    gets no credit for rows it was fitted on. The chosen method is then fitted on all the fitting rows.
    Ties go to the simpler method (none, then content-free, then fitted). ``note`` (why a method was not
    offered) is kept in ``chosen_by`` and shown in the summary.

    Only each method's argmax is used, so without "fitted" the scores may be pruned (``-inf`` for labels
    that could not win under no calibration or content-free).
    """
    labels, references = list(labels), list(references)
    scores = np.asarray(scores, dtype=np.float64)
    candidates = [m for m in METHODS if m in methods and (m != "content-free" or content_free_scores is not None)]
    judged: dict[str, float] = {}
    for method in candidates:
        if method == "fitted":
            predictions = _cross_fitted_predictions(labels, scores, references)
        else:
            cal = content_free(labels, content_free_scores) if method == "content-free" else uncalibrated(labels)
            predictions = [labels[i] for i in cal.apply(scores).argmax(axis=1)]
        judged[method] = float(metric(references, predictions))
    best = max(candidates, key=lambda m: (round(judged[m], 9), -candidates.index(m)))
    chosen = build(best, labels, scores=scores, references=references, fitted_on=fitted_on,
                   content_free_scores=content_free_scores)
    chosen.fitted_on, chosen.rows = fitted_on, len(references)
    chosen.chosen_by = {"metric": metric_name, "scores": judged} | ({"note": note} if note else {})
    return chosen


def build(method: str, labels: Sequence[str], *, scores: np.ndarray | None = None,
          references: Sequence[str] = (), fitted_on: str | None = None,
          content_free_scores: np.ndarray | None = None) -> Calibration:
    """One calibration of a given method (not "auto")."""
    method = normalise_method(method)
    if method == "none":
        return uncalibrated(labels)
    if method == "content-free":
        if content_free_scores is None:
            raise ValueError("content-free calibration needs the content-free scores")
        return content_free(labels, content_free_scores)
    if method == "fitted":
        if scores is None or not len(references):
            raise SettingsError("Fitted calibration needs labelled rows that are not scored (validation or "
                                "training rows).", "Give training rows, or choose 'none' or 'content-free'.")
        return fitted(labels, scores, references, fitted_on or "validation")
    raise SettingsError("'auto' must be resolved with choose(), not build().")


def _cross_fitted_predictions(labels: list[str], scores: np.ndarray, references: list[str]) -> list[str]:
    n = len(references)
    halves = [np.arange(0, n, 2), np.arange(1, n, 2)]  # interleaved: both halves see every part of the file
    predictions: list[str] = [""] * n
    for fit_part, judge_part in (halves, halves[::-1]):
        if not len(fit_part) or not len(judge_part):
            fit_part = judge_part = np.arange(n)
        cal = fitted(labels, scores[fit_part], [references[i] for i in fit_part], "validation")
        for i, k in zip(judge_part, cal.apply(scores[judge_part]).argmax(axis=1)):
            predictions[int(i)] = labels[int(k)]
    return predictions
