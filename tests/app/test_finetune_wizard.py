"""The fine-tuning wizard through AppTest: presets and help, the estimate, a background run to its result, reload,
re-attach and cancel.

Training is a real job (a subprocess) on the tiny random model ($PVF_MODEL), on a few rows of the sample.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import ROOT
from pvf_core import finetune, jobs
from pvf_core.data import load_dataset
from pvf_core.finetune import LoraSettings, preset_settings
from pvf_core.store import Store
from ui.settings_help import tip

WIZARD = "pages/finetune_wizard.py"
TIMEOUT = 120  # the first run in a process imports pandas, sklearn, plotly and reads the tokenizer
JOB_TIMEOUT = 300


@pytest.fixture(autouse=True)
def tiny_app(workspace, tiny_model_dir, monkeypatch):
    """The app on the tiny model; any job a test leaves running is stopped afterwards."""
    monkeypatch.setenv("PVF_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("PVF_THREADS", "1")
    monkeypatch.chdir(ROOT)
    yield
    for run in jobs.active_jobs():
        jobs.cancel(run.id, grace_seconds=1)


def new_app(**query) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update(query)
    return at


def wizard(at: AppTest, use_sample: bool = True) -> AppTest:
    """Home (using the sample dataset), then the wizard."""
    run(at)
    if use_sample:
        run(at.button(key="home_use").click())
    at.switch_page(WIZARD)
    return run(at)


def small_quick_run(at: AppTest, train: int = 24, test: int = 12) -> AppTest:
    run(at.button(key="ftw_preset_quick").click())
    run(at.number_input(key="ftw_train_rows").set_value(train))
    return run(at.number_input(key="ftw_test_rows").set_value(test))


def widget(at: AppTest, name: str):
    return at.text_input(key=f"ftw_{name}") if name == "target_modules" else at.number_input(key=f"ftw_{name}")


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def wait_until(check, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_presets_fill_the_settings_and_every_setting_explains_itself():
    at = wizard(new_app())
    assert at.button(key="ftw_preset_balanced").label == "✓ Chosen"
    assert widget(at, "epochs").value == 2 and widget(at, "learning_rate").value == pytest.approx(5e-4)
    balanced_steps = metric_values(at)["Training steps"]

    run(at.button(key="ftw_preset_quick").click())
    assert at.button(key="ftw_preset_quick").label == "✓ Chosen"
    assert at.button(key="ftw_preset_balanced").label == "Use Balanced"
    assert widget(at, "epochs").value == 1 and widget(at, "learning_rate").value == pytest.approx(1e-3)
    assert int(metric_values(at)["Training steps"]) < int(balanced_steps)  # the estimate follows the settings

    run(at.button(key="ftw_preset_thorough").click())
    thorough = preset_settings("thorough")
    for name, value in thorough.to_dict().items():
        assert widget(at, name).value == pytest.approx(value) if isinstance(value, float) else \
            widget(at, name).value == value, name
    run(widget(at, "epochs").set_value(3))
    changed = [c for c in texts(at.caption) if c.startswith("Changed from Thorough")]
    assert changed == ["Changed from Thorough: epochs 3 (preset: 4)"]
    run(at.button(key="ftw_reset").click())
    assert widget(at, "epochs").value == 4
    assert not any(c.startswith("Changed from") for c in texts(at.caption))

    # The help of every setting is its field's metadata (with its range); the advanced ones sit in an expander.
    for f in dataclasses.fields(LoraSettings):
        assert widget(at, f.name).help == tip(LoraSettings, f.name), f.name
        assert widget(at, f.name).help.startswith(f.metadata["help"]), f.name
    assert any(e.label == "Advanced settings" for e in at.expander)

    # The estimate: time, peak memory and steps, in words too.
    found = metric_values(at)
    assert set(found) >= {"Time, about", "Peak memory, about", "Training steps"}
    assert found["Peak memory, about"].endswith("GB")
    assert any(m.startswith("About ") and "of training" in m for m in texts(at.markdown))


def test_small_unbalanced_data_is_warned_about_and_a_run_that_does_not_fit_is_held_back(monkeypatch):
    monkeypatch.setattr(finetune, "_available_mb", lambda: 50.0)
    at = wizard(new_app())
    assert any(s.endswith("enough to fine-tune.") for s in texts(at.success))
    run(at.number_input(key="ftw_train_rows").set_value(24))
    warnings = texts(at.warning)
    assert any(w.startswith("Only 24 training rows.") for w in warnings), warnings
    assert any("fewer than 20 training rows" in w for w in warnings), warnings
    assert not at.success

    assert any("would not fit" in e for e in texts(at.error))
    assert at.button(key="ftw_start").disabled
    run(at.checkbox(key="ftw_force").check())
    assert not at.button(key="ftw_start").disabled


def test_a_run_trains_in_the_background_then_shows_its_result_and_a_reload_finds_it():
    at = small_quick_run(wizard(new_app()))
    run(at.button(key="ftw_start").click())
    run_id = int(at.query_params["run"])
    record = Store().get_run(run_id)
    assert record.kind == "finetune" and record.dataset_id == 1 and record.status in ("queued", "running")
    assert record.settings == preset_settings("quick").to_dict()
    assert record.name == "Quick, 24 training rows"
    assert "4. Train" in texts(at.header) and "5. Result" not in texts(at.header)
    assert any(m.startswith(f"**Run #{run_id}**: Quick, 24 training rows") for m in texts(at.markdown))
    assert at.button(key=f"ftw_cancel_{run_id}").label == "Cancel training"
    assert "--run-id" in texts(at.code)[0]  # the command it runs

    status = jobs.wait(run_id, timeout=JOB_TIMEOUT)
    assert status.status == "done", status.error
    run(at)
    assert "5. Result" in texts(at.header)
    found = metric_values(at)
    assert found["Accuracy"].endswith("%") and found["Macro F1"].endswith("%") and found["Test rows"] == "12"
    assert [b.label for b in at.get("download_button")] == ["Download the adapter (.zip)"]
    assert list(at.dataframe[-1].value.columns) == ["answer", "test rows", "found %", "right when said %", "F1 %"]
    assert not [b for b in at.button if b.key == f"ftw_cancel_{run_id}"]  # nothing left to cancel
    assert any(e.label == "Your fine-tuning runs on this dataset (1)" for e in at.expander)

    # A reload: a new browser session with the URL's ?dataset=&run= opens the same run.
    reloaded = new_app(dataset="1", run=str(run_id))
    run(reloaded)
    reloaded.switch_page(WIZARD)
    run(reloaded)
    assert any(m.startswith(f"**Run #{run_id}**") for m in texts(reloaded.markdown))
    assert "5. Result" in texts(reloaded.header)
    assert metric_values(reloaded)["Accuracy"] == found["Accuracy"]
    assert reloaded.query_params.get("run") == str(run_id)

    # Merging into a standalone model folder.
    run(reloaded.button(key="ftw_merge").click())
    assert any(s.startswith("Standalone model saved in") for s in texts(reloaded.success))
    assert (jobs.run_folder(run_id) / "merged" / "config.json").is_file()


def test_a_running_job_is_reattached_on_page_load_and_cancel_stops_it(tiny_model_dir):
    wizard(new_app())  # registers the sample dataset
    stale = wizard(new_app(dataset="1", run="42"), use_sample=False)  # a link to a run that is not there
    assert any("no run #42" in w for w in texts(stale.warning))
    assert "run" not in stale.query_params and "1. Data" in texts(stale.header)

    run_id = jobs.start_finetune(load_dataset(1).splits, preset_settings("balanced"), model=str(tiny_model_dir),
                                 dataset_id=1, name="started elsewhere")
    wait_until(lambda: jobs.job_status(run_id).status == "running")
    at = wizard(new_app(dataset="1"), use_sample=False)  # another browser, nothing about the run in its URL
    assert at.query_params["run"] == str(run_id)
    assert any(m.startswith(f"**Run #{run_id}**: started elsewhere") for m in texts(at.markdown))
    assert any(e.label.startswith("Start another run") for e in at.expander)  # the set-up steps fold away

    waiting = jobs.start_finetune(load_dataset(1).splits, preset_settings("quick"), model=str(tiny_model_dir),
                                  dataset_id=1, name="queued behind it")
    second = wizard(new_app(dataset="1", run=str(waiting)), use_sample=False)
    assert any(i.startswith("Waiting for the run before it to finish") for i in texts(second.info))
    run(second.button(key=f"ftw_cancel_{waiting}").click())  # a waiting run is simply dropped
    assert jobs.job_status(waiting).status == "cancelled"

    run(at.button(key=f"ftw_cancel_{run_id}").click())
    assert jobs.job_status(run_id).status == "cancelled"
    assert not jobs.active_jobs()
    assert any(i.startswith("Cancelled at") for i in texts(at.info))
    assert not [b for b in at.button if b.key == f"ftw_cancel_{run_id}"]


def test_overfitting_is_explained_in_plain_words_next_to_the_loss_chart():
    wizard(new_app())
    store = Store()
    run_id = store.add_run("finetune", dataset_id=1, name="an earlier run", status="cancelled",
                           settings=preset_settings("quick").to_dict())
    log, tracker = jobs.JobLog(run_id, store), finetune._Tracker(patience=0)
    for step, train_loss, val_loss in [(0, None, 2.0), (10, 1.5, 1.4), (20, 1.0, 1.5), (30, 0.6, 1.7)]:
        log.write({"event": "progress", "step": step, "total_steps": 40, "percent": step * 2.5,
                   "train_loss": train_loss, "val_loss": val_loss})
        tracker.update(step, train_loss, val_loss, None, model=type("NoWeights", (), {"named_parameters": list})())
    warning = tracker.overfitting()
    log.write(warning)

    at = wizard(new_app(dataset="1", run=str(run_id)), use_sample=False)
    shown = [w for w in texts(at.warning) if w.startswith("**Overfitting.**")]
    assert shown == [f"**Overfitting.** {warning['message']}"]
    assert "validation loss rose (1.400 → 1.700) while the training loss kept falling" in shown[0]
    assert len(at.get("plotly_chart")) == 1
    assert any(c.startswith("**Training loss**") for c in texts(at.caption))
    assert any(i.startswith("Cancelled at 75%") for i in texts(at.info))
    assert "5. Result" not in texts(at.header)


def test_the_public_demo_caps_rows_and_passes_and_may_switch_training_off(monkeypatch):
    import streamlit as st

    shown = st.get_option("client.showErrorDetails")
    for name, value in (("PVF_DEMO", "1"), ("PVF_DEMO_MIN_FREE_MB", "0"), ("PVF_DEMO_MAX_TRAIN_ROWS", "100"),
                        ("PVF_DEMO_MAX_EPOCHS", "1"), ("PVF_DEMO_MAX_JOBS", "0")):
        monkeypatch.setenv(name, value)
    try:
        at = run(new_app())  # a demo session starts with the sample selected
        at.switch_page(WIZARD)
        run(at)
        assert at.number_input(key="ftw_train_rows").value == 100
        assert widget(at, "epochs").value == 1  # Balanced asks for 2 passes; the demo allows 1
        assert any(c.startswith("The public demo trains on at most 100 rows") for c in texts(at.caption))
        run(at.button(key="ftw_start").click())
        assert any(e.startswith("Fine-tuning is switched off in this public demo.") for e in texts(at.error))
        assert "run" not in at.query_params
    finally:
        st.set_option("client.showErrorDetails", shown)  # demo mode hides tracebacks process-wide
