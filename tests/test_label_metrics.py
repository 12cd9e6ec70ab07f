"""Views of results with many labels: most confused pairs, a per-label table worst first, out-of-scope recall."""

from __future__ import annotations

from pvf_core.metrics import (classification_metrics, most_confused_pairs, out_of_scope_labels, out_of_scope_recall,
                              per_label_rows)

LABELS = ["card_arrival", "card_lost", "oos", "refund"]
REFS = ["card_arrival"] * 4 + ["card_lost"] * 3 + ["oos"] * 4 + ["refund"] * 2
PREDS = (["card_arrival", "card_lost", "card_lost", "card_arrival"] + ["card_lost"] * 3
         + ["oos", "refund", "card_lost", "oos"] + ["oos", "refund"])


def test_out_of_scope_names_are_recognised():
    assert out_of_scope_labels(["OOS", "Other", "out_of_scope", "out-of-scope", "card", "otherwise", "none"]) == \
        ["OOS", "Other", "out_of_scope", "out-of-scope", "none"]


def test_most_confused_pairs_count_rows_and_shares():
    metrics = classification_metrics(REFS, PREDS, LABELS)
    pairs = most_confused_pairs(metrics)
    assert pairs[0] == {"true": "card_arrival", "predicted": "card_lost", "rows": 2, "share_of_true": 0.5}
    assert {(p["true"], p["predicted"], p["rows"]) for p in pairs[1:]} == \
        {("oos", "refund", 1), ("oos", "card_lost", 1), ("refund", "oos", 1)}
    assert len(most_confused_pairs(metrics, top=2)) == 2


def test_per_label_rows_put_the_worst_first():
    metrics = classification_metrics(REFS, PREDS, LABELS)
    rows = per_label_rows(metrics)
    f1 = [r["f1"] for r in rows]
    assert f1 == sorted(f1)
    by_label = {r["label"]: r for r in rows}
    assert by_label["oos"]["out_of_scope"] and not by_label["refund"]["out_of_scope"]
    assert by_label["card_arrival"]["most_mistaken_for"] == "card_lost (2)"
    assert by_label["card_lost"]["predicted_rows"] == 6 and by_label["card_lost"]["recall"] == 1.0


def test_out_of_scope_recall_and_false_alarms():
    scope = out_of_scope_recall(classification_metrics(REFS, PREDS, LABELS))
    assert scope == {"labels": ["oos"], "test_rows": 4, "recall": 0.5, "found": 2, "false_alarms": 1,
                     "in_scope_rows": 9}
    assert out_of_scope_recall(classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])) is None
