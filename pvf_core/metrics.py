"""Scores computed from references and predictions alone (no model needed).

    classification_metrics(references, predictions, labels) -> accuracy, macro-F1, per class, confusion
    text_metrics(references, predictions)                   -> chrF (sacrebleu, 0-100), exact match
    chrf_statistics / chrf_of_rows                          -> chrF of any subset of rows from per-row statistics
    label_shares(predictions, labels)                       -> share of rows per predicted label
    collapse(predictions, references, labels)               -> did the model answer (almost) one label?
    unbalanced(references)                                  -> is the most common answer 3x the rarest?
    most_confused_pairs(metrics) / per_label_rows(metrics)  -> readable views of many labels (no N×N matrix)
    out_of_scope_recall(metrics)                            -> how often 'oos' / 'other' rows are recognised
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

COLLAPSE_SHARE = 0.8  # one label takes at least this share of the answers ...
COLLAPSE_EXCESS = 0.25  # ... and at least this much more than its share among the true answers
IMBALANCE_RATIO = 3  # the most common answer this many times the rarest: accuracy alone misleads, read macro-F1


def unbalanced(references: Sequence[str]) -> bool:
    """True when the most common answer is at least ``IMBALANCE_RATIO`` times as common as the rarest.

    The health check warns from the same rule, and calibration and the recommendation then judge by macro-F1.
    """
    counts = Counter(str(r) for r in references)
    return bool(counts) and max(counts.values()) >= IMBALANCE_RATIO * min(counts.values())
MAX_MATRIX_LABELS = 20  # beyond this many labels a confusion matrix is unreadable: show confused pairs instead
# Label names that mean "none of the others" (compared after lower-casing and removing punctuation):
# in routing, recognising them matters most, so their recall is shown on its own.
OUT_OF_SCOPE_NAMES = ("oos", "other", "others", "out of scope", "outofscope", "none", "unknown", "no intent",
                      "fallback", "misc", "miscellaneous", "not relevant", "irrelevant")


def classification_metrics(references: Sequence[str], predictions: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (rows = true labels)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    refs, preds, labels = [str(r) for r in references], [str(p) for p in predictions], [str(x) for x in labels]
    if not refs:
        return {"accuracy": 0.0, "macro_f1": 0.0, "per_class": {}, "confusion": [], "labels": labels}
    precision, recall, f1, support = precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
    present = [i for i, label in enumerate(labels) if support[i] > 0 or label in preds]
    macro_f1 = float(sum(f1[i] for i in present) / len(present)) if present else 0.0
    return {
        "accuracy": sum(r == p for r, p in zip(refs, preds)) / len(refs),
        "macro_f1": macro_f1,
        "per_class": {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                              "support": int(support[i])} for i, label in enumerate(labels)},
        "confusion": confusion_matrix(refs, preds, labels=labels).tolist(),
        "labels": labels,
    }


def text_metrics(references: Sequence[str], predictions: Sequence[str]) -> dict:
    """chrF (character n-gram F-score, 0-100, sacrebleu's corpus chrF) and the share of exact matches."""
    import sacrebleu

    refs = [str(r).strip() for r in references]
    preds = [str(p).strip() for p in predictions]
    if not refs:
        return {"chrf": 0.0, "exact_match": 0.0}
    chrf = sacrebleu.corpus_chrf(preds, [refs]).score
    exact = sum(" ".join(r.split()) == " ".join(p.split()) for r, p in zip(refs, preds)) / len(refs)
    return {"chrf": float(chrf), "exact_match": float(exact)}


def label_shares(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """The share of rows that got each label."""
    counts = Counter(map(str, predictions))
    total = max(len(predictions), 1)
    return {str(label): counts.get(str(label), 0) / total for label in labels}


def collapse(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]) -> dict:
    """Whether the answers collapsed onto one label: its share, and how far that is above the truth."""
    predicted, true = label_shares(predictions, labels), label_shares(references, labels)
    top = max(predicted, key=predicted.get) if predicted else ""
    share = predicted.get(top, 0.0)
    collapsed = share >= COLLAPSE_SHARE and share - true.get(top, 0.0) >= COLLAPSE_EXCESS
    return {"label": top, "share": share, "true_share": true.get(top, 0.0), "collapsed": bool(collapsed)}


def chrf_statistics(references: Sequence[str], predictions: Sequence[str]) -> np.ndarray:
    """Per-row sufficient statistics of sacrebleu's corpus chrF, one row per text: [rows, statistics].

    ``chrf_of_rows`` of any subset of these rows gives that subset's corpus chrF exactly; sacrebleu's own
    paired bootstrap resamples the same way. It makes a 1,000-sample bootstrap a matter of array sums
    instead of 1,000 corpus scorings. (Private sacrebleu methods: the version is pinned in requirements.txt
    and tests/test_compare.py checks the result against the corpus score.)
    """
    from sacrebleu.metrics import CHRF

    refs = [str(r).strip() for r in references]
    preds = [str(p).strip() for p in predictions]
    return np.asarray(CHRF()._extract_corpus_statistics(preds, [refs]), dtype=np.int64).reshape(len(refs), -1)


def chrf_of_rows(statistics: np.ndarray) -> float:
    """Corpus chrF (0-100) of the rows whose ``chrf_statistics`` are given (any subset, repeats allowed)."""
    from sacrebleu.metrics import CHRF

    return float(CHRF()._compute_score_from_stats([int(v) for v in statistics.sum(axis=0)]).score)



# -- many labels ----------------------------------------------------------------------------------------------

def _name_key(label: str) -> str:
    import re

    return re.sub(r"[\W_]+", " ", str(label).casefold()).strip()


def out_of_scope_labels(labels: Sequence[str]) -> list[str]:
    """The labels whose name says "none of the others" (``oos``, ``other``, ``out_of_scope``, ...)."""
    return [str(label) for label in labels if _name_key(label) in OUT_OF_SCOPE_NAMES]


def most_confused_pairs(metrics: dict, top: int = 15) -> list[dict]:
    """The (true label, predicted label) pairs that go wrong most often, from a ``classification_metrics``
    result: rows, and their share of the true label's test rows. Ties by name."""
    labels, matrix = metrics.get("labels") or [], np.asarray(metrics.get("confusion") or [], dtype=np.int64)
    if matrix.size == 0:
        return []
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    true_idx, pred_idx = np.nonzero(off)
    support = matrix.sum(axis=1)
    pairs = [{"true": labels[i], "predicted": labels[j], "rows": int(off[i, j]),
              "share_of_true": float(off[i, j] / support[i]) if support[i] else 0.0}
             for i, j in zip(true_idx, pred_idx)]
    return sorted(pairs, key=lambda p: (-p["rows"], -p["share_of_true"], p["true"], p["predicted"]))[:top]


def per_label_rows(metrics: dict) -> list[dict]:
    """One row per label, worst first (lowest F1, then most test rows): test rows, recall, precision, F1,
    how many of its rows were predicted, the label it is most often mistaken for, and whether it means
    "out of scope"."""
    labels, matrix = metrics.get("labels") or [], np.asarray(metrics.get("confusion") or [], dtype=np.int64)
    scope = set(out_of_scope_labels(labels))
    rows = []
    for i, label in enumerate(labels):
        m = metrics.get("per_class", {}).get(label, {})
        mistaken = ""
        if matrix.size:
            off = matrix[i].copy()
            off[i] = 0
            if off.max() > 0:
                mistaken = f"{labels[int(off.argmax())]} ({int(off.max())})"
        rows.append({"label": label, "test_rows": int(m.get("support", 0)), "recall": float(m.get("recall", 0.0)),
                     "precision": float(m.get("precision", 0.0)), "f1": float(m.get("f1", 0.0)),
                     "predicted_rows": int(matrix[:, i].sum()) if matrix.size else 0,
                     "most_mistaken_for": mistaken, "out_of_scope": label in scope})
    return sorted(rows, key=lambda r: (r["f1"], -r["test_rows"], r["label"]))


def out_of_scope_recall(metrics: dict) -> dict | None:
    """For the out-of-scope labels: their test rows, the share recognised (recall), and how many in-scope
    rows were wrongly sent there (false alarms). None when no label means out of scope."""
    labels, matrix = metrics.get("labels") or [], np.asarray(metrics.get("confusion") or [], dtype=np.int64)
    scope = [labels.index(label) for label in out_of_scope_labels(labels)]
    if not scope or matrix.size == 0:
        return None
    inside = [i for i in range(len(labels)) if i not in scope]
    support = int(matrix[scope].sum())
    found = int(matrix[np.ix_(scope, scope)].sum())
    false_alarms = int(matrix[np.ix_(inside, scope)].sum())
    return {"labels": [labels[i] for i in scope], "test_rows": support,
            "recall": found / support if support else 0.0, "found": found, "false_alarms": false_alarms,
            "in_scope_rows": int(matrix[inside].sum())}
