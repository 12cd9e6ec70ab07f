"""Background jobs: start, progress, cancel, a killed process, re-attach after an app restart, the queue."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pvf_core import jobs
from pvf_core.data import Splits
from pvf_core.evaluate import Stopped
from pvf_core.finetune import LoraSettings
from pvf_core.store import Store

from conftest import toy_reviews

PROGRESS_KEYS = {"step", "total_steps", "epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate",
                 "examples_per_second", "percent", "eta_seconds", "time"}


@pytest.fixture(autouse=True)
def job_env(monkeypatch):
    monkeypatch.setenv("PVF_THREADS", "1")  # job processes: tiny model, one thread
    yield
    jobs._children.clear()


def splits(n_train: int = 64) -> Splits:
    return Splits(train=toy_reviews(n_train, seed=1), validation=toy_reviews(16, seed=2),
                  test=toy_reviews(16, seed=3), task="classification")


def settings(epochs: float = 2, **changes) -> LoraSettings:
    return LoraSettings(epochs=epochs, learning_rate=1e-2, target_modules="all-linear", patience=0, **changes)


def wait_for(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def started_training(run_id: int) -> bool:
    return any(e.get("event") == "progress" and e.get("step", 0) > 0 for e in jobs.read_progress(run_id))


def test_a_job_survives_an_app_restart_and_runs_to_done(tiny_learner_dir):
    run_id = jobs.start_finetune(splits(256), settings(epochs=6), model=str(tiny_learner_dir), name="toy")
    wait_for(lambda: started_training(run_id), what="training to start")
    # a restarted app: a new process knows nothing but the workspace, and finds the job there
    jobs._children.clear()
    found = jobs.active_jobs(Store())
    assert [r.id for r in found] == [run_id] and found[0].status == "running"
    status = jobs.job_status(run_id, Store())
    assert status.status == "running" and 0 < status.percent < 100 and status.total_steps > 0
    assert status.eta_seconds is not None and status.train_loss is not None

    status = jobs.wait(run_id, timeout=240)
    assert status.status == "done", (status.error, (jobs.run_folder(run_id) / "job.log").read_text()[-2000:])
    assert status.percent == 100.0 and status.result["n_test"] == 16
    assert status.result["adapter_dir"] == str(jobs.run_folder(run_id))
    events = jobs.read_progress(run_id)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(PROGRESS_KEYS <= set(e) for e in progress)
    assert [e["status"] for e in events if e["event"] == "status"] == ["running", "running", "done"]
    assert "leakage" not in {w["code"] for w in status.warnings}
    run = Store().get_run(run_id)
    assert run.status == "done" and "accuracy" in run.metrics and run.timings["train_seconds"] > 0
    assert (jobs.run_folder(run_id) / "adapter_model.safetensors").is_file()
    assert "--run-id" in jobs.command_line(run_id) and "finetune" in jobs.command_line(run_id)
    assert jobs.active_jobs() == []


def test_cancel_stops_a_running_job(tiny_learner_dir):
    run_id = jobs.start_finetune(splits(256), settings(epochs=40), model=str(tiny_learner_dir))
    wait_for(lambda: started_training(run_id), what="training to start")
    pid = Store().get_run(run_id).pid
    status = jobs.cancel(run_id, grace_seconds=30)
    assert status.status == "cancelled" and "Cancelled" in status.message
    wait_for(lambda: not _alive(pid), timeout=10, what="the process to end")
    assert not (jobs.run_folder(run_id) / "adapter_model.safetensors").exists()
    assert jobs.job_status(run_id).status == "cancelled"  # stays cancelled


@pytest.mark.parametrize("app_restarted", [False, True])
def test_a_killed_process_becomes_failed_in_plain_words(tiny_learner_dir, app_restarted):
    run_id = jobs.start_finetune(splits(256), settings(epochs=40), model=str(tiny_learner_dir))
    wait_for(lambda: started_training(run_id), what="training to start")
    if app_restarted:
        jobs._children.clear()  # the app that started it is gone: only the pid in the store is left
    os.killpg(os.getpgid(Store().get_run(run_id).pid), signal.SIGKILL)
    status = wait_for(lambda: (s := jobs.job_status(run_id)).finished and s, timeout=20, what="failed")
    assert status.status == "failed" and "Nothing else was lost" in status.error
    if app_restarted:
        assert "stopped without reporting a result" in status.error
    else:
        assert "signal 9" in status.error and "out of memory" in status.error
    assert 'Its last message was: "[' in status.error  # the job's last words, from job.log
    last = jobs.read_progress(run_id)[-1]
    assert last["event"] == "status" and last["status"] == "failed"
    assert Store().get_run(run_id).status == "failed" and jobs.active_jobs() == []


def test_one_job_runs_at_a_time_and_the_queue_moves_on(tiny_learner_dir):
    first = jobs.start_finetune(splits(), settings(epochs=1), model=str(tiny_learner_dir))
    no_validation = Splits(train=toy_reviews(64, seed=1), validation=toy_reviews(0), test=toy_reviews(16, seed=3),
                           task="classification")  # the job carves its own validation rows
    second = jobs.start_finetune(no_validation, settings(epochs=1), model=str(tiny_learner_dir))
    third = jobs.start_finetune(splits(), settings(epochs=1), model=str(tiny_learner_dir))
    queued = jobs.job_status(second)
    assert jobs.job_status(first).status == "running"
    assert queued.status == "queued" and queued.queue_position == 1
    assert jobs.cancel(third).status == "cancelled"  # a queued job is simply dropped
    jobs._children.clear()  # nobody is polling: the finishing job itself starts the next one
    store = Store()
    assert wait_for(lambda: store.get_run(second).status in ("running", "done"), timeout=180, what="second")
    done = jobs.wait(second, timeout=180)
    assert done.status == "done" and done.result["training"]["validation_rows"] == 6
    assert store.get_run(first).status == "done" and store.get_run(third).status == "cancelled"
    assert store.get_run(first).updated <= store.get_run(second).updated


def test_unknown_runs_are_refused():
    from pvf_core.errors import JobError

    with pytest.raises(JobError, match="no run number 99"):
        jobs.job_status(99)
    with pytest.raises(JobError):
        jobs.cancel(99)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_kept_adapters_accuracy_measured_after_training_reaches_the_status():
    """With many labels the checks carry only the loss; the accuracy comes in one "validation" event."""
    store = Store()
    run_id = store.add_run("finetune", name="many labels")
    log = jobs.JobLog(run_id, store)
    log.write({"event": "progress", "step": 6, "total_steps": 6, "val_loss": 0.5, "val_accuracy": None,
               "percent": 100.0})
    assert jobs.job_status(run_id, store).val_accuracy is None
    log.write({"event": "validation", "step": 6, "val_accuracy": 0.875, "message": "Validation accuracy ..."})
    status = jobs.job_status(run_id, store)
    assert status.val_loss == 0.5 and status.val_accuracy == 0.875


def test_a_job_delivers_its_result_before_its_status_says_finished():
    """A poller that sees "done" must find the result: the job prints it (its result file) first. Before, the
    status came first and the finishing job then started the next queued one, so a poller could read {}."""
    from pvf_core import cli

    seen: list[tuple[str, str]] = []

    def deliver(result: dict) -> None:
        seen.append((result["status"], Store().get_run(result["run_id"]).status))

    result = cli._as_job("finetune", "test", {}, None, None, lambda log, folder: {"status": "done"}, (), deliver)
    assert seen == [("done", "running")] and Store().get_run(result["run_id"]).status == "done"

    def stopped(log, folder):
        raise Stopped("stop")

    seen.clear()
    cancelled = cli._as_job("finetune", "test", {}, None, None, stopped, (), deliver)
    assert seen == [("cancelled", "running")] and Store().get_run(cancelled["run_id"]).status == "cancelled"
