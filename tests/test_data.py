"""The data layer on the real datasets in shared/datasets and on small constructed frames."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import dataset_path
from pvf_core.data import (ColumnMapping, Limits, SplitSettings, Splits, decode, health_check, labeled_frame,
                           load_dataset, load_splits, make_splits, mapping_notes, normalise_text, plural, read_csv,
                           register_dataset, suggest_mapping)
from pvf_core.errors import DataError
from pvf_core.samples import SAMPLE_NAME, sample_csv_bytes
from pvf_core.store import Store

# Exact figures from shared/datasets/README.md: rows, and label -> count for classification files.
REAL = {
    "sst2_train.csv": (6920, {"negative": 3310, "positive": 3610}),
    "sst2_validation.csv": (872, {"negative": 428, "positive": 444}),
    "sst2_test.csv": (1821, {"negative": 912, "positive": 909}),
    "ag_news_train.csv": (4999, {"Business": 1280, "Sci/Tech": 1203, "Sports": 1257, "World": 1259}),
    "ag_news_test.csv": (7600, {"Business": 1900, "Sci/Tech": 1900, "Sports": 1900, "World": 1900}),
    "sms_spam_train.csv": (4459, {"ham": 3862, "spam": 597}),
    "sms_spam_test.csv": (1115, {"ham": 965, "spam": 150}),
    "trec_train.csv": (5452, {"abbreviation": 86, "description": 1162, "entity": 1250, "human": 1223,
                              "location": 835, "numeric": 896}),
    "trec_test.csv": (500, {"abbreviation": 9, "description": 138, "entity": 94, "human": 65, "location": 81,
                            "numeric": 113}),
    "jfleg_train.csv": (754, None),
    "jfleg_test.csv": (747, None),
}


def load(name: str):
    table = read_csv(dataset_path(name))
    mapping = suggest_mapping(table)
    return table, mapping, labeled_frame(table, mapping)


# -- the real files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_rows_labels_and_task(name):
    rows, labels = REAL[name]
    table, mapping, frame = load(name)
    assert (len(table), len(frame)) == (rows, rows)
    assert (table.encoding, table.delimiter) == ("utf-8", ",")
    assert table.notes == []
    if labels is None:
        assert table.columns == ["input", "output"]
        assert (mapping.task, mapping.text_column, mapping.label_column) == ("text-to-text", "input", "output")
    else:
        assert table.columns == ["text", "label"]
        assert (mapping.task, mapping.text_column, mapping.label_column) == ("classification", "text", "label")
        assert frame["label"].value_counts().to_dict() == labels


def test_splits_are_stratified_and_cover_every_row():
    _, mapping, frame = load("trec_train.csv")
    splits = make_splits(frame, mapping.task, SplitSettings(test_fraction=0.2, validation_fraction=0.1, seed=3))
    sizes = splits.sizes()
    assert sum(sizes.values()) == 5452
    assert sizes["test"] == pytest.approx(0.2 * 5452, abs=20)
    assert sizes["validation"] == pytest.approx(0.1 * 5452, abs=20)
    overall = frame["label"].value_counts(normalize=True)
    for part in (splits.train, splits.validation, splits.test):
        share = part["label"].value_counts(normalize=True)
        for label, expected in overall.items():
            assert share[label] == pytest.approx(expected, abs=0.01), label
    # even the rarest label (86 rows) lands in every part
    assert {"abbreviation"} <= set(splits.test["label"]) & set(splits.validation["label"])
    assert splits.labels == sorted(REAL["trec_train.csv"][1])


def test_splits_are_reproducible_by_seed():
    _, mapping, frame = load("sst2_validation.csv")
    first = make_splits(frame, mapping.task, SplitSettings(seed=7))
    again = make_splits(frame, mapping.task, SplitSettings(seed=7))
    other = make_splits(frame, mapping.task, SplitSettings(seed=8))
    for part in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(getattr(first, part), getattr(again, part))
    assert list(first.test["text"]) != list(other.test["text"])


def test_duplicate_texts_stay_on_one_side_of_the_split():
    """SMS spam has 331 repeated messages: the split must not put copies on both sides (self-made leakage)."""
    _, mapping, frame = load("sms_spam_train.csv")
    splits = make_splits(frame, mapping.task, SplitSettings(seed=0))
    assert sum(splits.sizes().values()) == 4459
    sides = [set(part["text"].map(normalise_text)) for part in (splits.train, splits.validation, splits.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    codes = {w.code for w in health_check(splits)}
    assert "leakage" not in codes
    assert {"duplicates", "class_imbalance"} <= codes


def test_a_given_test_file_is_used_as_is():
    _, mapping, train = load("sst2_train.csv")
    test_table = read_csv(dataset_path("sst2_test.csv"))
    test = labeled_frame(test_table, mapping)
    splits = make_splits(train, mapping.task, SplitSettings(test_fraction=0.0, validation_fraction=0.1), test)
    pd.testing.assert_frame_equal(splits.test, test)  # every row, in file order
    assert len(splits.train) + len(splits.validation) == 6920
    assert len(splits.validation) == pytest.approx(692, abs=5)
    # README: 2 sst2 test texts are also in train; that real leakage is reported
    leakage = next(w for w in health_check(splits) if w.code == "leakage")
    assert leakage.numbers["rows"] >= 2


def test_load_splits_keeps_test_file_order_for_text_to_text():
    splits, mapping = load_splits(dataset_path("jfleg_train.csv"), dataset_path("jfleg_test.csv"), seed=1)
    assert (mapping.task, mapping.text_column, mapping.label_column) == ("text-to-text", "input", "output")
    assert len(splits.test) == 747
    assert list(splits.test["text"]) == list(read_csv(dataset_path("jfleg_test.csv")).frame["input"])
    assert len(splits.train) + len(splits.validation) == 754
    assert splits.labels == []


def test_load_splits_refuses_a_test_file_without_the_columns(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("sentence,category\nhello there,a\n", encoding="utf-8")
    with pytest.raises(DataError, match="text column 'text' is not in the file"):
        load_splits(dataset_path("sst2_validation.csv"), other)


# -- column mapping ---------------------------------------------------------------------------------------

def table_of(text: str):
    return read_csv(text.encode("utf-8"), name="t.csv")


def test_mapping_overrides_win_and_are_checked():
    table = table_of("id,review,stars\n" + "".join(f"{i},review number {i} was fine,{i % 3}\n" for i in range(30)))
    guess = suggest_mapping(table)
    assert (guess.text_column, guess.label_column, guess.task) == ("review", "stars", "classification")
    forced = suggest_mapping(table, text_column="review", label_column="id", task="text-to-text")
    assert (forced.text_column, forced.label_column, forced.task) == ("review", "id", "text-to-text")
    with pytest.raises(DataError, match="'nope' is not in the file"):
        suggest_mapping(table, text_column="nope")
    with pytest.raises(DataError, match="must be different"):
        ColumnMapping("classification", "review", "review").check(table)


def test_many_distinct_answers_mean_text_to_text():
    table = table_of("question,answer\n" + "".join(f"what is {i} plus one,it is {i + 1}\n" for i in range(80)))
    assert suggest_mapping(table).task == "text-to-text"


def test_mapping_notes_count_rows_left_out():
    table = table_of("text,label\n" + "".join(f"text {i},{'' if i % 4 == 0 else 'a'}\n" for i in range(20)))
    mapping = suggest_mapping(table)
    [note] = mapping_notes(table, mapping)
    assert note.code == "missing_values" and note.numbers["rows"] == 5
    assert len(labeled_frame(table, mapping)) == 15


def test_decode_handles_a_utf8_file_with_a_few_cp1252_bytes():
    raw = "Catégorie,text\n".encode("cp1252") + "a,un café très noir\n".encode("utf-8")
    text, encoding = decode(raw)
    assert encoding == "utf-8+cp1252"
    assert text == "Catégorie,text\na,un café très noir\n"


def test_limits_are_enforced():
    raw = ("text,label\n" + "".join(f"row {i:03d},a\n" for i in range(100))).encode()  # 1,011 bytes
    with pytest.raises(DataError, match=r"The file is 1\.0 KB; the limit is 500 bytes"):
        read_csv(raw, limits=Limits(max_bytes=500))
    with pytest.raises(DataError, match="100 rows; the limit is 50"):
        read_csv(raw, limits=Limits(max_rows=50))
    with pytest.raises(DataError, match="a cell of 7 characters; the limit is 5"):
        read_csv(raw, limits=Limits(max_cell_chars=5))


def test_plural():
    assert [plural(1, "row"), plural(2, "row"), plural(1200, "text is", "texts are")] == \
        ["1 row", "2 rows", "1,200 texts are"]


# -- health check on constructed frames -------------------------------------------------------------------

def frame_of(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["text", "label"])


def splits_of(train: list[tuple[str, str]], test: list[tuple[str, str]] | None = None,
              task: str = "classification") -> Splits:
    """Splits built directly, so each test controls exactly what is where."""
    empty = frame_of([])
    return Splits(train=frame_of(train), validation=empty, test=frame_of(test or []),
                  task=task)  # type: ignore[arg-type]


def clean_rows(n: int, labels=("alpha", "beta"), start: int = 0) -> list[tuple[str, str]]:
    words = ["parcel", "invoice", "password", "screen", "refund", "courier", "login", "order"]
    return [(f"message {i} about the {words[i % 8]} and {words[(i * 5) % 8]}", labels[i % len(labels)])
            for i in range(start, start + n)]


def codes(splits: Splits, **kwargs) -> set[str]:
    return {w.code for w in health_check(splits, **kwargs)}


def test_clean_data_has_no_findings():
    assert codes(splits_of(clean_rows(300), clean_rows(100, start=300))) == set()


@pytest.mark.parametrize("code, train, test, task", [
    ("too_few_rows", clean_rows(20), clean_rows(10, start=20), "classification"),
    ("small_test_set", clean_rows(200), clean_rows(10, start=200), "classification"),
    ("too_few_per_class", clean_rows(200) + [("a rare message number one", "rare")] * 1
     + [("a rare message number two", "rare")], clean_rows(60, start=200), "classification"),
    ("class_imbalance", clean_rows(180, labels=("common",)) + clean_rows(20, labels=("rare",), start=180),
     clean_rows(60, start=200), "classification"),
    ("single_class", clean_rows(100, labels=("only",)), clean_rows(40, labels=("only",), start=100),
     "classification"),
    ("too_many_classes", clean_rows(100, labels=[f"c{i}" for i in range(40)]),
     clean_rows(40, labels=[f"c{i}" for i in range(40)], start=100), "classification"),
    ("duplicates", clean_rows(100) + clean_rows(5), clean_rows(40, start=100), "classification"),
    ("near_duplicates", clean_rows(100) + [(clean_rows(2)[1][0].upper().replace(" ", "  ") + "!", "beta")],
     clean_rows(40, start=100), "classification"),
    ("leakage", clean_rows(100), clean_rows(40, start=90), "classification"),
    ("conflicting_labels", clean_rows(100) + [("message 0 about the parcel and parcel", "beta")],
     clean_rows(40, start=100), "classification"),
    ("empty_texts", clean_rows(100) + [("ok", "alpha"), ("a", "beta")], clean_rows(40, start=100),
     "classification"),
    ("numeric_texts", clean_rows(100) + [("12.50", "alpha"), ("3,000 / 4", "beta")], clean_rows(40, start=100),
     "classification"),
    ("leakage", clean_rows(100, labels=("out a", "out b")), clean_rows(40, labels=("out a", "out b"), start=99),
     "text-to-text"),
])
def test_each_health_code_fires(code, train, test, task):
    findings = health_check(splits_of(train, test, task))
    found = {w.code: w for w in findings}
    assert code in found, [w.code for w in findings]
    warning = found[code]
    assert warning.message and warning.level in ("info", "warning", "error")
    assert warning.to_dict()["code"] == code


def test_health_numbers_are_exact():
    common = clean_rows(100, labels=("common",))
    rare = clean_rows(10, labels=("rare",), start=100)
    train = common + rare + [common[0], (common[1][0], "rare")]  # an exact repeat and a conflicting one
    test = clean_rows(30, labels=("common",), start=105)  # 105..109 are also in train (as 'rare')
    found = {w.code: w for w in health_check(splits_of(train, test))}
    assert found["duplicates"].numbers == {"rows": 2 + 5}
    assert found["leakage"].numbers == {"rows": 5, "test_rows": 30}
    assert found["conflicting_labels"].numbers == {"texts": 1 + 5}
    assert found["class_imbalance"].numbers == {"ratio": round(131 / 11, 2), "majority_share": round(131 / 142, 3)}
    assert "too_few_per_class" not in found and "small_test_set" not in found


def test_too_long_uses_the_token_counter():
    rows = clean_rows(100) + [("word " * 50, "alpha")]
    fake = lambda texts: [len(t.split()) * 10 for t in texts]  # noqa: E731 - 10 "tokens" per word
    found = {w.code: w for w in health_check(splits_of(rows, clean_rows(40, start=200)), count_tokens=fake,
                                             context_length=200)}
    assert found["too_long"].numbers["rows"] == 1
    assert found["too_long"].numbers["max_tokens"] == 500
    fits = {w.code for w in health_check(splits_of(clean_rows(100), clean_rows(40, start=200)), count_tokens=fake,
                                          context_length=2000)}
    assert "too_long" not in fits and "lengths" in fits


def test_findings_come_worst_first():
    splits = splits_of(clean_rows(20, labels=("only",)) + clean_rows(2, labels=("only",)),
                       clean_rows(5, labels=("only",)))
    levels = [w.level for w in health_check(splits)]
    assert levels[0] == "error"
    assert levels == sorted(levels, key=["error", "warning", "info"].index)


def test_texts_in_other_scripts_are_not_near_duplicates():
    """normalise_text used to drop every non-ASCII letter, so all Cyrillic or Chinese texts 'matched'."""
    words = ["Привет мир", "Доставка опоздала", "你好世界", "包裹丢失了", "مرحبا بالعالم", "こんにちは", "🙂", "🚚"]
    train = [(f"{words[i % 8]} {i}", "a" if i % 2 else "b") for i in range(64)]
    found = codes(splits_of(train[:48], train[48:]))
    assert "leakage" not in found and "near_duplicates" not in found
    assert normalise_text("Привет, МИР!") == "привет мир"


# -- registered datasets ----------------------------------------------------------------------------------

def test_register_and_load_give_the_same_splits(workspace):
    store = Store()
    raw = ("sep=;\nNachricht;Team\n" + "".join(f"Grüße {i}, das Paket ist spät;{'a' if i % 3 else 'b'}\n"
                                                for i in range(60))).encode("cp1252")
    table = read_csv(raw, name="german.csv")
    mapping = suggest_mapping(table)
    split = SplitSettings(test_fraction=0.25, seed=5)
    dataset = register_dataset(table, mapping, split, store=store)
    again = load_dataset(dataset.id, store=store)
    for part in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(getattr(dataset.splits, part), getattr(again.splits, part))
    assert again.name == "german.csv" and again.mapping == mapping and again.split == split
    assert register_dataset(table, mapping, split, store=store).id == dataset.id  # same content: same dataset
    assert str(workspace) in store.get_dataset(dataset.id).path


def test_register_with_a_test_table(workspace):
    table = read_csv(sample_csv_bytes(), name=SAMPLE_NAME)
    test_table = read_csv(sample_csv_bytes(n=40, seed=99), name="test.csv")
    mapping = suggest_mapping(table)
    dataset = register_dataset(table, mapping, SplitSettings(test_fraction=0.0), test_table=test_table)
    assert dataset.splits.sizes()["test"] == 40
    again = load_dataset(dataset.id)
    pd.testing.assert_frame_equal(again.splits.test, dataset.splits.test)


def test_loading_an_unknown_dataset_is_a_plain_error():
    with pytest.raises(DataError, match="no dataset number 99"):
        load_dataset(99)


def test_tiny_and_degenerate_frames():
    three = frame_of([("one text", "a"), ("two text", "b"), ("three text", "a")])
    splits = make_splits(three, "classification")
    assert splits.sizes() == {"train": 2, "validation": 0, "test": 1}
    same = frame_of([("the same text", "a")] * 10)
    with pytest.raises(DataError, match="only 10 rows with 1 different text: too few"):
        make_splits(same, "classification")
    stacked = pd.concat([frame_of(clean_rows(30)), frame_of(clean_rows(30, start=30))])  # index 0..29 twice
    splits = make_splits(stacked, "classification", SplitSettings(seed=1))
    assert sum(splits.sizes().values()) == 60
    assert set(splits.train["text"]) | set(splits.validation["text"]) | set(splits.test["text"]) == \
        set(stacked["text"])
