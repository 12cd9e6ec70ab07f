"""Figures and tables shared by the pages: the loss chart and the per-answer table of a fine-tuning result."""

from __future__ import annotations

from pvf_core.metrics import classification_metrics
from pvf_core.report import loss_figure, per_class_frame


def test_per_class_frame_in_percent_one_row_per_answer():
    metrics = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    table = per_class_frame(metrics)
    assert list(table.columns) == ["answer", "test rows", "found %", "right when said %", "F1 %"]
    rows = table.set_index("answer").to_dict("index")
    assert rows["a"] == {"test rows": 2, "found %": 50.0, "right when said %": 100.0, "F1 %": 66.7}
    assert rows["b"]["found %"] == 100.0 and rows["b"]["right when said %"] == 66.7
    assert per_class_frame({"chrf": 40.0}).empty


def test_loss_figure_draws_training_and_validation_loss_by_step():
    progress = [{"step": 0, "train_loss": None, "val_loss": 2.0}, {"step": 5, "train_loss": 1.8, "val_loss": None},
                {"step": 10, "train_loss": 1.5, "val_loss": 1.6}]
    train, validation = loss_figure(progress).data
    assert list(train.x) == [5, 10] and list(train.y) == [1.8, 1.5]
    assert list(validation.x) == [0, 10] and list(validation.y) == [2.0, 1.6]
