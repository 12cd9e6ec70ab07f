"""Fine-tuning with many labels: the work per training row does not grow with the label count, and the
adapter only ever answers one of the labels (it is scored, not generated)."""

from __future__ import annotations

import pandas as pd
import pytest

from pvf_core.data import Splits
from pvf_core.finetune import LoraSettings, default_prompt, train_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def splits_with(n_labels: int, rows: int = 150) -> Splits:
    """The same texts for any label count; label names of equal length (l001, l002...), all in training."""
    labels = [f"l{i:03d}" for i in range(1, n_labels + 1)]

    def frame(start: int, n: int) -> pd.DataFrame:
        return pd.DataFrame({"text": [f"request number {i} about item {i % 7}" for i in range(start, start + n)],
                             "label": [labels[i % n_labels] for i in range(n)]})

    return Splits(train=frame(0, rows), validation=frame(1000, 8), test=frame(2000, 12), task="classification")


def test_training_work_per_row_does_not_grow_with_the_labels(tiny_model_dir, tmp_path):
    settings = LoraSettings(epochs=1, batch_size=8, learning_rate=1e-3, patience=0, eval_every=1000)
    few, many = splits_with(4), splits_with(150)
    assert "l150" not in default_prompt(many).system_message() and "l004" in default_prompt(few).system_message()
    results = {n: train_lora(settings, s, str(tiny_model_dir), tmp_path / str(n))
               for n, s in ((4, few), (150, many))}
    per_row = {n: r.computed_tokens / r.train_examples for n, r in results.items()}
    assert results[4].train_examples == results[150].train_examples == 150
    assert per_row[150] <= per_row[4]  # the same rows, same answer lengths: no extra work for 146 more labels

    from pvf_core.evaluate import Arm, evaluate
    from pvf_core.finetune import FinetuneRun

    run = FinetuneRun.load(tmp_path / "150")
    scored = evaluate(run.arm(), many.test, task="classification", labels=many.labels)
    assert set(scored.predictions) <= set(many.labels) and len(scored.predictions) == 12
    assert isinstance(run.arm(), Arm)
