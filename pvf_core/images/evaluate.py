"""Image arms on the test images -> the text side's ``EvalResult``, so ``compare.build_comparison`` applies as is.

    label_prompting_result(...)   the ImageNet classifier, labels mapped to its classes
    head_result(...)              a fine-tuned head (on cached or LoRA-adapted features)
    clip_results(...)             CLIP zero-shot and few-shot prototypes (hub models)

A result's ``texts`` are the images' paths inside their zip, so ``--predictions`` files and the disagreement
table name each image. ``ms_per_example`` is the whole cost of answering one image with the batch the
evaluation used: decoding, preprocessing, the backbone and the head (every arm here runs the backbone;
computed once for the test images and charged to each arm that needs it). ``latencies_ms`` are measured one
image at a time. Predictions of a row depend on that row only (no batch statistics).
"""

from __future__ import annotations

import resource
from typing import Sequence

import numpy as np
import pandas as pd

from ..evaluate import EvalResult
from ..metrics import classification_metrics


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def result_from_scores(arm: str, test: pd.DataFrame, labels: Sequence[str], probabilities: np.ndarray, *,
                       ms_per_example: float, latencies_ms: Sequence[float], seconds: float, model: str,
                       spec: dict | None = None, warnings: Sequence[dict] = ()) -> EvalResult:
    """An ``EvalResult`` from per-image label probabilities ([images, labels])."""
    labels = list(labels)
    predictions = [labels[i] for i in probabilities.argmax(axis=1)] if len(test) else []
    references = [str(x) for x in test["label"]]
    scores = [{label: float(p) for label, p in zip(labels, row)} for row in probabilities]
    return EvalResult(arm=arm, task="classification", n_test=len(test),
                      metrics=classification_metrics(references, predictions, labels), texts=list(test["text"]),
                      references=references, predictions=predictions, label_scores=scores,
                      ms_per_example=float(ms_per_example), latencies_ms=[float(x) for x in latencies_ms],
                      prompt_tokens_per_row=0.0, peak_rss_mb=peak_rss_mb(), seconds=float(seconds),
                      calibration="none", raw_label_scores=None, computed_tokens_per_row=0.0,
                      spec=spec or {}, model=model, warnings=list(warnings))


def unpredictable_warning(mapping: dict[str, list[int]], test: pd.DataFrame) -> list[dict]:
    """Labels no ImageNet class stands for: label prompting can never answer them."""
    empty = [label for label, ids in mapping.items() if not ids]
    if not empty:
        return []
    share = float(test["label"].isin(empty).mean()) if len(test) else 0.0
    return [{"code": "unmapped_labels", "level": "warning",
             "message": f"No ImageNet class matches {', '.join(repr(x) for x in empty)}: label prompting never "
                        f"answers {'it' if len(empty) == 1 else 'them'} ({share:.0%} of the test images). "
                        "Describe such labels in everyday words, or fine-tune.",
             "numbers": {"labels": empty, "test_share": round(share, 3)}}]
