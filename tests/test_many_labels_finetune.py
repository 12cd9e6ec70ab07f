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


def test_with_many_labels_checks_compute_the_loss_and_the_kept_adapter_its_accuracy_once(tiny_model_dir, tmp_path):
    """Over 20 labels a check's exact accuracy is the costly part; the loss (which picks the best step) is
    the same number either way, and the kept adapter's accuracy is scored once, after training."""
    from pvf_core.finetune import LIVE_ACCURACY_MAX_LABELS, validation_metrics
    from pvf_core.evaluate import PRUNE_FROM_LABELS

    assert LIVE_ACCURACY_MAX_LABELS == PRUNE_FROM_LABELS - 1
    settings = LoraSettings(epochs=1, batch_size=8, learning_rate=1e-3, patience=0, eval_every=4)
    events: dict[int, list[dict]] = {4: [], 30: []}
    results = {n: train_lora(settings, splits_with(n, rows=48), str(tiny_model_dir), tmp_path / str(n),
                             on_progress=events[n].append) for n in events}
    checks = {n: [e for e in events[n] if e["event"] == "progress" and e["val_loss"] is not None] for n in events}
    assert len(checks[4]) == len(checks[30]) == 3  # steps 0, 4 and the last (6)
    assert all(e["val_accuracy"] is not None for e in checks[4])
    assert all(e["val_accuracy"] is None for e in checks[30])
    assert not [e for e in events[4] if e["event"] == "validation"]
    final = [e for e in events[30] if e["event"] == "validation"]
    assert len(final) == 1 and final[0]["step"] == results[30].best_step
    assert final[0]["val_accuracy"] == results[30].best_val_accuracy is not None

    # the loss the checks computed is the one label scoring gives the right label; the accuracy is the kept
    # adapter's, scored as every check scores it with few labels
    from peft import PeftModel

    from pvf_core.finetune.tokens import encode
    from pvf_core.models import load_model

    loaded = load_model(str(tiny_model_dir), fresh=True)
    adapter = PeftModel.from_pretrained(loaded.model, str(tmp_path / "30")).eval()
    spec = results[30].prompt
    val = encode(splits_with(30, rows=48).validation, spec, loaded.tokenizer, settings.max_length)[0]
    pad = loaded.tokenizer.pad_token_id
    loss_only = validation_metrics(adapter, loaded.tokenizer, spec, val, pad, "cpu", 8, accuracy=False)
    both = validation_metrics(adapter, loaded.tokenizer, spec, val, pad, "cpu", 8)
    assert loss_only[1] is None and loss_only[0] == pytest.approx(both[0], abs=1e-4)
    assert loss_only[0] == pytest.approx(results[30].best_val_loss, abs=1e-3)
    assert both[1] == pytest.approx(results[30].best_val_accuracy, abs=1e-6)
