"""Managing saved work (names, deletion, run numbers) and the job view's honest edges (time left from
measured steps, a loss chart that starts in place)."""

from __future__ import annotations

import pytest

from pvf_core import manage
from pvf_core.errors import SettingsError
from pvf_core.jobs import measured_time_left, remember_duration, remembered_duration, run_folder
from pvf_core.report import loss_figure
from pvf_core.store import Store


def test_run_numbers_count_per_dataset_and_kind():
    store = Store()
    store.add_run("prompt", dataset_id=1)
    store.add_run("prompt", dataset_id=1)
    other = store.add_run("finetune", dataset_id=2)
    first = store.add_run("finetune", dataset_id=1)
    second = store.add_run("finetune", dataset_id=1)
    assert store.run_number(store.get_run(first)) == 1  # the first fine-tuning run of dataset 1, whatever its id
    assert store.run_number(store.get_run(second)) == 2
    assert store.run_number(store.get_run(other)) == 1


def test_rename_and_delete_a_run_with_its_folder():
    store = Store()
    run_id = store.add_run("finetune", dataset_id=1, name="old", status="done")
    folder = run_folder(run_id)
    (folder / "adapter_model.safetensors").write_bytes(b"x")
    store.update_run(run_id, folder=str(folder))
    assert manage.rename_run(store, run_id, "  rank 16,\n more rows ") == "rank 16, more rows"
    assert store.get_run(run_id).name == "rank 16, more rows"
    with pytest.raises(SettingsError):
        manage.rename_run(store, run_id, "   ")
    manage.delete_run(store, run_id)
    assert store.get_run(run_id) is None and not folder.exists()


def test_a_running_run_is_not_deleted_and_outside_folders_stay(tmp_path):
    store = Store()
    busy = store.add_run("finetune", status="running")
    with pytest.raises(SettingsError, match="cancel it"):
        manage.delete_run(store, busy)
    outside = tmp_path / "my-adapter"
    outside.mkdir()
    done = store.add_run("finetune", status="done", folder=str(outside))
    manage.delete_run(store, done)
    assert store.get_run(done) is None and outside.is_dir()  # a folder the user chose is never removed


def test_delete_a_prompt_version_with_its_run():
    store = Store()
    run_id = store.add_run("prompt", dataset_id=1, status="done")
    version = store.add_prompt_version(dataset_id=1, name="v1", spec={}, run_id=run_id)
    store.rename_prompt_version(version, "plain")
    assert store.list_prompt_versions(1)[0].name == "plain" and store.get_run(run_id).name == "plain"
    manage.delete_version(store, version)
    assert store.list_prompt_versions(1) == [] and store.get_run(run_id) is None


def test_time_left_comes_from_measured_steps():
    events = [{"event": "progress", "step": 0, "total_steps": 100, "time": 0.0}]  # step 0: the first validation
    events += [{"event": "progress", "step": s, "total_steps": 100, "time": 60.0 + 2.0 * s} for s in range(1, 3)]
    assert measured_time_left(events) is None  # too few steps measured yet
    events.append({"event": "progress", "step": 10, "total_steps": 100, "time": 80.0})
    assert measured_time_left(events) == pytest.approx(2.0 * 90)  # 2 s a step, loading time not counted
    stages = [{**e, "message": "Scoring"} for e in events]
    assert measured_time_left(stages) is None  # a comparison's stages keep their own estimate


def test_remembered_durations():
    assert remembered_duration("measure:bundled") is None
    remember_duration("measure:bundled", 155.04)
    assert remembered_duration("measure:bundled") == 155.0


def test_the_loss_chart_starts_in_place():
    fig = loss_figure([{"step": 0, "val_loss": 2.5, "train_loss": None}], total_steps=120)
    assert list(fig.layout.xaxis.range) == [0, 120] and fig.layout.yaxis.range[0] == 0
    assert fig.layout.yaxis.range[1] == pytest.approx(2.75)
