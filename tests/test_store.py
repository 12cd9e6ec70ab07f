"""The workspace folder and its SQLite store."""

from __future__ import annotations

import sqlite3

import pytest

from pvf_core import store as store_module
from pvf_core.store import MIGRATIONS, Store, workspace, workspace_dir


def test_workspace_is_pvf_home(workspace):
    assert workspace_dir("runs", "7") == workspace / "runs" / "7"
    assert (workspace / "runs" / "7").is_dir()
    assert Store().path == workspace / "pvf.sqlite"


def test_migrations_apply_once_in_order(workspace, monkeypatch):
    Store()
    Store()  # re-opening the same database applies nothing again
    with sqlite3.connect(workspace / "pvf.sqlite") as conn:
        applied = [row[0] for row in conn.execute("SELECT name FROM migrations ORDER BY rowid")]
    assert applied == [name for name, _ in MIGRATIONS]

    # A migration appended later runs once on the next open, and the data before it is kept.
    dataset_id = Store().add_dataset(name="a.csv", content_hash="h", path="/p", task="classification",
                                     mapping={}, split={}, n_rows=3)
    later = [*MIGRATIONS, ("999_test_column", "ALTER TABLE datasets ADD COLUMN note TEXT DEFAULT 'x';")]
    monkeypatch.setattr(store_module, "MIGRATIONS", later)
    Store()
    Store()  # a second ALTER TABLE would fail with "duplicate column"
    with sqlite3.connect(workspace / "pvf.sqlite") as conn:
        assert conn.execute("SELECT note FROM datasets WHERE id = ?", (dataset_id,)).fetchone() == ("x",)
        assert conn.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == len(later)


def test_dataset_round_trip():
    store = Store()
    mapping = {"task": "classification", "text_column": "text", "label_column": "label"}
    split = {"test_fraction": 0.2, "validation_fraction": 0.1, "seed": 3}
    first = store.add_dataset(name="a.csv", content_hash="abc", path="/x/a.csv", task="classification",
                              mapping=mapping, split=split, n_rows=120, test_path="/x/b.csv")
    second = store.add_dataset(name="c.csv", content_hash="def", path="/x/c.csv", task="text-to-text",
                               mapping=mapping, split=split, n_rows=10)
    record = store.get_dataset(first)
    assert (record.name, record.content_hash, record.path, record.task, record.n_rows, record.test_path) == \
        ("a.csv", "abc", "/x/a.csv", "classification", 120, "/x/b.csv")
    assert record.mapping == mapping and record.split == split
    assert store.get_dataset(second).test_path is None
    assert store.get_dataset(999) is None
    assert [r.id for r in store.list_datasets()] == [second, first]  # newest first
    assert store.find_dataset("abc", mapping, split).id == first
    assert store.find_dataset("abc", mapping, {**split, "seed": 4}) is None
    assert store.find_dataset("zzz", mapping, split) is None


def test_run_round_trip_and_update():
    store = Store()
    run_id = store.add_run("prompt", dataset_id=None, name="zero-shot", settings={"shots": 0}, folder="/r/1")
    run = store.get_run(run_id)
    assert (run.kind, run.name, run.settings, run.status, run.metrics, run.timings, run.folder, run.pid) == \
        ("prompt", "zero-shot", {"shots": 0}, "created", {}, {}, "/r/1", None)
    assert not run.finished
    store.update_run(run_id, status="done", metrics={"accuracy": 0.75, "per_label": {"a": [1, 2]}},
                     timings={"seconds": 1.5}, pid=1234, error="")
    run = store.get_run(run_id)
    assert run.status == "done" and run.finished and run.pid == 1234
    assert run.metrics == {"accuracy": 0.75, "per_label": {"a": [1, 2]}}
    assert run.timings == {"seconds": 1.5}
    assert run.updated >= run.created
    with pytest.raises(ValueError, match="unknown run fields"):
        store.update_run(run_id, kind="finetune")
    assert store.get_run(run_id + 1) is None


def test_list_runs_filters():
    store = Store()
    dataset = store.add_dataset(name="a.csv", content_hash="h", path="/p", task="classification", mapping={},
                                split={}, n_rows=3)
    ids = {
        "p1": store.add_run("prompt", dataset_id=dataset),
        "p2": store.add_run("prompt", dataset_id=dataset, status="done"),
        "f1": store.add_run("finetune", dataset_id=dataset, status="running"),
        "p3": store.add_run("prompt"),
    }
    assert [r.id for r in store.list_runs()] == sorted(ids.values(), reverse=True)
    assert {r.id for r in store.list_runs(kind="prompt")} == {ids["p1"], ids["p2"], ids["p3"]}
    assert {r.id for r in store.list_runs(kind="prompt", dataset_id=dataset)} == {ids["p1"], ids["p2"]}
    assert [r.id for r in store.list_runs(status="running")] == [ids["f1"]]
    assert store.list_runs(kind="compare") == []


def test_prompt_versions_round_trip_with_run_metrics():
    store = Store()
    run_id = store.add_run("prompt", settings={})
    store.update_run(run_id, metrics={"accuracy": 0.5})
    first = store.add_prompt_version(dataset_id=1, name="v1", spec={"instruction": "Classify.", "shots": 0},
                                     run_id=run_id)
    second = store.add_prompt_version(dataset_id=1, name="v2", spec={"instruction": "Sort it.", "shots": 4})
    store.add_prompt_version(dataset_id=2, name="other", spec={})
    versions = store.list_prompt_versions(dataset_id=1)
    assert [v.id for v in versions] == [first, second]  # oldest first
    assert versions[0].spec == {"instruction": "Classify.", "shots": 0}
    assert versions[0].metrics == {"accuracy": 0.5} and versions[0].run_id == run_id
    assert versions[1].metrics == {} and versions[1].run_id is None
    assert len(store.list_prompt_versions()) == 3


def test_each_workspace_has_its_own_store(tmp_path, monkeypatch):
    Store().add_run("prompt")
    monkeypatch.setenv("PVF_HOME", str(tmp_path / "other"))
    assert workspace() == tmp_path / "other"
    assert Store().list_runs() == []


def test_an_explicit_path_is_used(tmp_path):
    store = Store(tmp_path / "nested" / "x.sqlite")
    store.add_run("prompt")
    assert (tmp_path / "nested" / "x.sqlite").is_file()
    assert len(Store(tmp_path / "nested" / "x.sqlite").list_runs()) == 1
