"""Hub datasets through ``datasets``: the same table, mapping, limits and health check as a CSV (no network)."""

from __future__ import annotations

import pytest

from pvf_core.data import Limits, health_check, labeled_frame, make_splits, suggest_mapping
from pvf_core.errors import DataError
from pvf_core.hub_data import load_hub_table, table_from_dataset


def reviews():
    import datasets

    texts = [f"The film number {i} was {'great' if i % 2 else 'boring'}" for i in range(60)]
    features = datasets.Features({"sentence": datasets.Value("string"), "idx": datasets.Value("int32"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    return datasets.Dataset.from_dict({"sentence": texts, "idx": list(range(60)), "label": [i % 2 for i in range(60)]},
                                      features=features)


def test_a_saved_dataset_reads_like_a_csv(tmp_path):
    import datasets

    folder = tmp_path / "sst2-like"
    datasets.DatasetDict({"train": reviews(), "validation": reviews().select(range(10))}).save_to_disk(str(folder))
    table = load_hub_table(str(folder), "train")
    assert len(table) == 60 and table.columns == ["sentence", "idx", "label"]
    assert set(table.frame["label"]) == {"negative", "positive"}  # class numbers became their names
    mapping = suggest_mapping(table)
    assert (mapping.text_column, mapping.label_column, mapping.task) == ("sentence", "label", "classification")
    splits = make_splits(labeled_frame(table, mapping), mapping.task)
    assert sum(splits.sizes().values()) == 60
    assert not [w for w in health_check(splits) if w.level == "error"]
    with pytest.raises(DataError, match="has no split 'test'"):
        load_hub_table(str(folder), "test")


def test_the_same_limits_as_a_csv():
    with pytest.raises(DataError, match="the limit is 50") as found:
        table_from_dataset(reviews(), "reviews", limits=Limits(max_rows=50))
    assert "train[:5000]" in found.value.hint
    with pytest.raises(DataError, match="characters"):
        table_from_dataset(reviews(), "reviews", limits=Limits(max_cell_chars=10))


def test_offline_a_hub_id_says_why(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="Hub datasets are unavailable"):
        load_hub_table("stanfordnlp/sst2", "train")
