"""Plain-language findings before a run (risky data, rows cut) and after it (no better than guessing)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ..data import HealthWarning, Splits, health_check
from .settings import LoraSettings


MIN_TRAIN_ROWS = 100        # below this, fine-tuning results swing with every row
MIN_TRAIN_PER_LABEL = 20    # below this per label, the adapter sees too few examples of it
MIN_VALIDATION_ROWS = 20    # below this, validation loss is too noisy for early stopping
RELEVANT_HEALTH = {"single_class", "too_few_rows", "too_few_per_class", "class_imbalance", "conflicting_labels",
                   "leakage", "too_many_classes"}


def finetune_warnings(splits: Splits, settings: LoraSettings | None = None,
                      lengths: Sequence[int] | None = None) -> list[HealthWarning]:
    """Plain-language findings that make a fine-tuning run risky, worst first (reuses data.health_check).

    ``lengths`` (tokens per training example) adds a warning about rows longer than ``max_length``.
    """
    settings = settings or LoraSettings()
    found = [w for w in health_check(splits) if w.code in RELEVANT_HEALTH]
    n_train = len(splits.train)
    if n_train < MIN_TRAIN_ROWS:
        found.append(HealthWarning(
            "small_for_finetuning", f"Only {n_train} training rows. Fine-tuning usually needs a few hundred; with "
            "fewer the result changes a lot from run to run, and a good prompt may do as well.", "warning",
            {"train_rows": n_train, "recommended": MIN_TRAIN_ROWS}))
    if splits.task == "classification" and n_train:
        counts = splits.train["label"].value_counts()
        rare = counts[counts < MIN_TRAIN_PER_LABEL]
        if len(rare):
            found.append(HealthWarning(
                "few_rows_per_label", f"{len(rare)} label(s) have fewer than {MIN_TRAIN_PER_LABEL} training rows "
                f"({', '.join(f'{k}: {v}' for k, v in rare.head(5).items())}); the adapter will rarely answer them.",
                "warning", {"labels": {str(k): int(v) for k, v in rare.items()}}))
    if len(splits.validation) < MIN_VALIDATION_ROWS:
        found.append(HealthWarning(
            "small_validation", f"Only {len(splits.validation)} validation rows: the validation loss that early "
            "stopping watches will be noisy.", "info", {"validation_rows": len(splits.validation)}))
    if lengths is not None:
        cut = int(sum(n > settings.max_length for n in lengths))
        if cut:
            found.append(HealthWarning(
                "rows_cut", f"{cut} training rows are longer than the max length of {settings.max_length} tokens; "
                "the end of their text is cut.", "warning", {"rows": cut, "max_length": settings.max_length,
                                                            "longest": int(max(lengths))}))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda w: order[w.level])


def result_warnings(metrics: dict) -> list[HealthWarning]:
    """Plain-language findings about a fine-tuned model's test metrics: no better than guessing, one answer only."""
    found = []
    shares = metrics.get("true_shares") or {}
    if shares and metrics.get("accuracy") is not None:
        common = max(shares, key=shares.get)
        if metrics["accuracy"] <= shares[common]:
            found.append(HealthWarning(
                "no_better_than_majority", f"No better than always answering '{common}', which would get "
                f"{shares[common]:.0%} of these rows right: the model has not learned the task (yet). More training "
                "rows, more passes or a higher learning rate may help; or a prompt does the job.", "warning",
                {"accuracy": metrics["accuracy"], "majority_label": common, "majority_share": shares[common]}))
    gone = metrics.get("collapse") or {}
    if gone.get("collapsed"):
        found.append(HealthWarning(
            "collapsed", f"The model answers '{gone['label']}' for {gone['share']:.0%} of the rows (the right answer "
            f"for {gone['true_share']:.0%}): it has learned to say one thing. More rows, more passes or a higher "
            "learning rate may help.", "warning", dict(gone)))
    return found


def cap_rows(splits: Splits, train_rows: int | None = None, test_rows: int | None = None) -> Splits:
    """The first ``train_rows`` training and ``test_rows`` test rows (the splits are shuffled): a quicker run.

    Validation rows stay as they are (``LoraSettings.validation_rows`` limits how many each check reads).
    """
    return dataclasses.replace(
        splits, train=splits.train.head(int(train_rows)) if train_rows else splits.train,
        test=splits.test.head(int(test_rows)) if test_rows else splits.test)

