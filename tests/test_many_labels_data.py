"""Many labels in the data layer: task detection, rare / missing / look-alike labels, stratified splits."""

from __future__ import annotations

import pandas as pd
import pytest

from pvf_core.data import (SplitSettings, Splits, detect_task, health_check, make_splits, read_csv,
                           suggest_mapping, task_reason)

DOMAINS = ["card", "transfer", "cash", "account", "loan", "pin", "fee", "refund", "top_up", "exchange"]
ACTIONS = ["arrival", "lost", "declined", "pending", "limit", "fee", "cancel", "verify", "change", "request",
           "failed", "refund", "charge", "info", "status"]


def intents(n: int) -> list[str]:
    """n intent names like card_arrival, transfer_lost: short, sharing their first words."""
    return [f"{d}_{a}" for d in DOMAINS for a in ACTIONS][:n]


def table_of(rows: list[tuple[str, str]], header: str = "text,label"):
    body = "".join(f'"{t}",{label}\n' for t, label in rows)
    return read_csv((header + "\n" + body).encode("utf-8"), name="t.csv")


def intent_rows(n_labels: int, per_label: int) -> list[tuple[str, str]]:
    return [(f"message {i} number {k} about {label.replace('_', ' ')}", label)
            for k in range(per_label) for i, label in enumerate(intents(n_labels))]


@pytest.mark.parametrize("n_labels", [77, 150])
def test_many_repeating_short_labels_are_classification(n_labels):
    table = table_of(intent_rows(n_labels, 3))
    mapping = suggest_mapping(table)
    assert mapping.task == "classification"
    task, reason = detect_task(table.frame["label"])
    assert task == "classification"
    assert f"{n_labels} different short answers" in reason and "100%" in reason


def test_a_few_labels_are_said_to_be_few_not_to_repeat():
    # 2 labels in 2 rows: none repeats, so the reason must not say they do (the small-set rule decided)
    task, reason = detect_task(table_of([("a", "yes"), ("b", "no")]).frame["label"])
    assert task == "classification" and "repeat" not in reason
    assert reason.startswith("2 different short answers in 2 rows (1.0 rows per answer)")


def test_free_text_that_rarely_repeats_is_text_to_text():
    rows = [(f"fix the sentence number {i}", f"This is corrected sentence {i}.") for i in range(200)]
    table = table_of(rows, "input,output")
    task, reason = detect_task(table.frame["output"])
    assert suggest_mapping(table).task == task == "text-to-text"
    assert "appear only once" in reason


def test_long_answers_are_free_text_even_when_they_repeat():
    rows = [(f"text {i}", "a long answer that goes on and on well beyond any label's length") for i in range(60)]
    rows += [(f"text b{i}", "another long answer that goes on and on well beyond a label's length") for i in range(60)]
    task, reason = detect_task(table_of(rows).frame["label"])
    assert task == "text-to-text" and "characters long" in reason


def test_mostly_unique_answers_over_a_small_set_are_text_to_text():
    # 60 distinct answers in 150 rows: on average they repeat, but only 10 of them (17%) appear twice or more
    rows = [(f"q {i}", f"ans{i}") for i in range(50)] + [(f"r {i}", f"common{i % 10}") for i in range(100)]
    task, reason = detect_task(table_of(rows).frame["label"])
    assert task == "text-to-text" and "17%" in reason


def test_more_than_500_labels_are_text_to_text():
    rows = [(f"t {i} {k}", f"l{i}") for i in range(501) for k in range(2)]
    task, reason = detect_task(table_of(rows).frame["label"])
    assert task == "text-to-text" and "501" in reason


def test_the_override_wins_and_the_reason_says_so():
    table = table_of(intent_rows(150, 2))
    forced = suggest_mapping(table, task="text-to-text")
    assert forced.task == "text-to-text"
    reason = task_reason(table, forced)
    assert reason.startswith("Set to text-to-text by you") and "classification" in reason
    assert task_reason(table, suggest_mapping(table)).startswith("150 different short answers")


def splits_of(train, test) -> Splits:
    frame = lambda rows: pd.DataFrame(rows, columns=["text", "label"])  # noqa: E731
    return Splits(train=frame(train), validation=frame([]), test=frame(test), task="classification")


def test_rare_missing_and_look_alike_labels_are_reported():
    train = intent_rows(20, 10) + [("one row of card-arrival", "card-arrival"), ("a lonely row", "lonely"),
                                   ("two rows a", "pair"), ("two rows b", "pair")]
    test = [r for r in intent_rows(20, 12)[200:] if r[1] != "card_lost"]
    found = {w.code: w for w in health_check(splits_of(train, test))}
    rare = found["rare_labels"]
    assert rare.numbers["labels"] == {"card-arrival": 1, "lonely": 1, "pair": 2}
    assert "3 labels have only one or two rows" in rare.message
    missing = found["labels_missing_from_test"]
    assert missing.numbers["labels"] == ["card_lost", "pair", "card-arrival", "lonely"]
    alike = found["near_duplicate_labels"]
    assert alike.numbers["groups"] == [["card-arrival", "card_arrival"]]
    assert "'card-arrival' and 'card_arrival'" in alike.message
    assert {"code", "message", "numbers"} <= set(alike.to_dict())


def test_stratified_splits_hold_with_rare_labels():
    rows = intent_rows(50, 20) + [("a lonely row", "lonely"), ("pair row a", "pair"), ("pair row b", "pair")]
    frame = pd.DataFrame(rows, columns=["text", "label"])
    splits = make_splits(frame, "classification", SplitSettings(test_fraction=0.2, validation_fraction=0.1, seed=1))
    test_counts = splits.test["label"].value_counts()
    # every common label keeps its share exactly (20 rows -> 4 test rows), although single rows exist
    assert all(test_counts.get(label, 0) == 4 for label in intents(50))
    assert sum(splits.sizes().values()) == len(frame)
