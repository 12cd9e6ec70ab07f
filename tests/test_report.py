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


def test_quality_bars_show_chrf_as_points_and_the_unchanged_text_as_a_line():
    from pvf_core.report import metric_bars_figure

    rows = [{"arm": "zero-shot", "value": 0.329, "low": 0.27, "high": 0.38},
            {"arm": "LoRA", "value": 0.80, "low": 0.77, "high": 0.83}]
    figure = metric_bars_figure(rows, "chrF", unchanged=0.862)
    assert list(figure.data[0].text) == ["32.9", "80.0"] and figure.layout.yaxis.title.text == "chrF"
    (line,) = figure.layout.shapes
    assert line.y0 == line.y1 == 86.2
    assert figure.layout.annotations[0].text == "leaving the text unchanged: 86.2"
    accuracy = metric_bars_figure([{**r} for r in rows], "accuracy")
    assert list(accuracy.data[0].text) == ["32.9%", "80.0%"] and not accuracy.layout.shapes
