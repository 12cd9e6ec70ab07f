"""Background jobs: a fine-tuning run in its own process, its progress log, cancel, re-attach, a queue.

    run_id = start_finetune(splits, settings, model="bundled")   # queued, started when nothing else runs
    job_status(run_id)   -> JobStatus (status, percent, ETA, last losses, plain-language error)
    read_progress(run_id) -> [dict]    (the JSON lines the job wrote)
    cancel(run_id)                     (stop file, then kill of the process group)
    active_jobs()        -> [Run]      (re-attach: what is running or queued in this workspace)

A job is ``python -m pvf_core finetune ... --run-id N`` started with ``Popen`` (no shell) in its own session,
so it outlives the page, the browser and the app. It appends JSON lines to ``runs/<N>/progress.jsonl`` and
keeps its status in the store's ``runs`` table; its stdout (the result JSON) goes to ``result.json`` and its
stderr to ``job.log``. Anyone may call ``refresh()`` (``job_status`` does): a "running" job whose process is
gone becomes "failed" with the reason in plain words, and the oldest queued job starts when nothing runs.
One job runs at a time per workspace; a file lock keeps two callers from starting two.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import JobError
from .store import Run, Store, workspace, workspace_dir

PROGRESS_FILE = "progress.jsonl"
STOP_FILE = "STOP"
JOB_FILE = "job.json"
LOG_FILE = "job.log"
RESULT_FILE = "result.json"
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")

_children: dict[tuple[str, int], subprocess.Popen] = {}   # jobs this process started, by _child_key (reaped in refresh)


def _child_key(run_id: int) -> tuple[str, int]:
    """Run ids repeat across workspaces (demo mode has one per browser session): key children by both."""
    return str(workspace()), int(run_id)


# -- where a job keeps its files --------------------------------------------------------------------------

def run_folder(run_id: int) -> Path:
    """``$PVF_HOME/runs/<run_id>``: the job's settings, data, progress log, adapter and result."""
    return workspace_dir("runs", str(int(run_id)))


def progress_path(run_id: int) -> Path:
    return run_folder(run_id) / PROGRESS_FILE


# -- inside the job process: writing progress -------------------------------------------------------------

class JobLog:
    """What a running job writes: JSON lines in its run folder and its status in the store."""

    def __init__(self, run_id: int, store: Store | None = None) -> None:
        self.run_id = int(run_id)
        self.store = store or Store()
        self.path = progress_path(run_id)
        self.stop_path = run_folder(run_id) / STOP_FILE

    def write(self, record: dict) -> None:
        """Append one event (``progress``, ``warning`` or ``status``) as a JSON line."""
        record = {**record, "time": record.get("time") or time.time()}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def should_stop(self) -> bool:
        """True once someone asked this job to stop (the stop file exists)."""
        return self.stop_path.exists()

    def started(self) -> None:
        """Mark the job running with this process's id (also when the launcher did already)."""
        _write_job_file(self.run_id, os.getpid())
        self.store.update_run(self.run_id, status="running", pid=os.getpid(), error="")
        self.write({"event": "status", "status": "running", "message": "Training started."})

    def finished(self, status: str, message: str = "", *, metrics: dict | None = None,
                 timings: dict | None = None) -> None:
        """Record the final status (done, failed or cancelled) unless the job is already finished."""
        fields: dict[str, Any] = {}
        if metrics is not None:
            fields["metrics"] = metrics
        if timings is not None:
            fields["timings"] = timings
        if finish_run(self.store, self.run_id, status, message if status != "done" else ""):
            if fields:
                self.store.update_run(self.run_id, **fields)
            self.write({"event": "status", "status": status, "message": message})


def finish_run(store: Store, run_id: int, status: str, error: str = "") -> bool:
    """Set a final status only if the run is still queued or running (atomic); True if this call did it."""
    with store.connect() as conn:
        cur = conn.execute("UPDATE runs SET status = ?, error = ?, updated = ? WHERE id = ? AND status IN (?, ?)",
                           (status, error, time.time(), int(run_id), *ACTIVE))
        return cur.rowcount == 1


# -- starting jobs ----------------------------------------------------------------------------------------

def job_command(run_id: int, args: list[str]) -> list[str]:
    """The job's command line: the CLI with ``--run-id`` (never through a shell)."""
    return [sys.executable, "-m", "pvf_core", *args, "--run-id", str(int(run_id)), "--json"]


def submit(args: list[str], *, kind: str = "finetune", name: str = "", settings: dict | None = None,
           dataset_id: int | None = None, run_id: int | None = None, store: Store | None = None) -> int:
    """Queue a CLI command (e.g. ``["finetune", "--train", ...]``) as a job; start it if nothing runs.

    ``run_id`` queues a run created beforehand (whose folder already holds the job's data).
    """
    store = store or Store()
    if run_id is None:
        run_id = store.add_run(kind, dataset_id=dataset_id, name=name, settings=settings or {}, status="queued")
    folder = run_folder(run_id)
    store.update_run(run_id, status="queued", folder=str(folder))
    (folder / JOB_FILE).write_text(json.dumps({"args": list(args)}), encoding="utf-8")
    refresh(store)
    return run_id


def write_splits(splits: Any, folder: Path) -> list[str]:
    """Write train / validation / test as CSV files (a job is self-contained); the CLI options naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["input", "output"] if splits.task == "text-to-text" else ["text", "label"]
    parts = ["train", "test"] + (["validation"] if len(splits.validation) else [])  # none: the job carves 10%
    for part in parts:
        getattr(splits, part)[["text", "label"]].set_axis(columns, axis=1).to_csv(folder / f"{part}.csv", index=False)
    column_args = (["--input-column", "input", "--output-column", "output"] if splits.task == "text-to-text"
                   else ["--text-column", "text", "--label-column", "label"])
    return [arg for part in parts for arg in (f"--{part}", str(folder / f"{part}.csv"))] + column_args


def start_finetune(splits: Any, settings: Any, *, model: str = "bundled", prompt: Any = None, name: str = "",
                   dataset_id: int | None = None, test_limit: int | None = None,
                   store: Store | None = None) -> int:
    """Queue a fine-tuning job on these splits (written into the run folder, so the job is self-contained)."""
    store = store or Store()
    run_id = store.add_run("finetune", dataset_id=dataset_id, name=name or f"LoRA r={settings.rank}",
                           settings=settings.to_dict(), status="created")
    folder = run_folder(run_id)
    (folder / "settings.json").write_text(json.dumps(settings.to_dict(), indent=2), encoding="utf-8")
    args = ["finetune", *write_splits(splits, folder / "data"), "--settings", str(folder / "settings.json"),
            "--model", model, "--seed", str(settings.seed), "--output", str(folder)]
    if prompt is not None:
        (folder / "prompt.json").write_text(json.dumps(prompt.to_dict(), indent=2), encoding="utf-8")
        args += ["--prompt", str(folder / "prompt.json")]
    if test_limit:
        args += ["--limit", str(int(test_limit))]
    return submit(args, run_id=run_id, store=store)


@contextmanager
def _queue_lock() -> Iterator[None]:
    """One caller at a time decides what runs (the app, a CLI and a finishing job may all ask)."""
    path = workspace_dir("runs") / ".queue.lock"
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refresh(store: Store | None = None) -> int | None:
    """Fail running jobs whose process is gone; start the oldest queued job if none runs. Its id, or None."""
    store = store or Store()
    with _queue_lock():
        for key, child in list(_children.items()):   # reap finished children (no zombies)
            if key[0] != str(workspace()):
                continue  # another workspace's job: its own refresh reaps it
            run = store.get_run(key[1])
            if child.poll() is not None and (run is None or run.finished):
                _children.pop(key, None)
        for run in store.list_runs(status="running"):
            if not _process_alive(run):
                _mark_dead(store, run)
        if store.list_runs(status="running"):
            return None
        queued = sorted(store.list_runs(status="queued"), key=lambda r: r.id)
        return _launch(store, queued[0]) if queued else None


def _launch(store: Store, run: Run) -> int:
    folder = run_folder(run.id)
    job = _read_job_file(run.id)
    command = job_command(run.id, job.get("args", []))
    # The job writes to this workspace (in demo mode: this browser session's, not $PVF_HOME itself).
    env = {**os.environ, "PVF_HOME": str(workspace()), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent),
                                                    env.get("PYTHONPATH", "")) if p)
    env.pop("PVF_RAISE_ERRORS", None)
    with open(folder / RESULT_FILE, "wb") as stdout, open(folder / LOG_FILE, "ab") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env,
                                   cwd=str(folder), start_new_session=True)
    _children[_child_key(run.id)] = process
    _write_job_file(run.id, process.pid, command=command)
    store.update_run(run.id, status="running", pid=process.pid, error="")
    return run.id


def _write_job_file(run_id: int, pid: int, command: list[str] | None = None) -> None:
    job = _read_job_file(run_id)
    job.update({"pid": pid, "pid_start": _process_start(pid), "started": time.time()})
    if command:
        job["command"] = command
    (run_folder(run_id) / JOB_FILE).write_text(json.dumps(job), encoding="utf-8")


def _read_job_file(run_id: int) -> dict:
    path = run_folder(run_id) / JOB_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# -- is the process still there? --------------------------------------------------------------------------

def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell it from a later process with its id."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _process_alive(run: Run) -> bool:
    """Whether the run's process still runs (not a zombie, not a new process that reused its id)."""
    pid = run.pid
    child = _children.get(_child_key(run.id))
    if child is not None:  # started by this process: ask Popen (which also reaps it and keeps its exit code)
        return child.poll() is None
    if not pid_alive(pid):
        return False
    recorded = _read_job_file(run.id).get("pid_start")
    return recorded is None or recorded == _process_start(pid)


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists and is not a zombie (a zombie child is reaped)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc (not Linux): os.kill said it exists
    if state == "Z":
        _reap(int(pid))
        return False
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _mark_dead(store: Store, run: Run) -> None:
    """A running job whose process vanished: failed, with the reason in plain words."""
    child = _children.pop(_child_key(run.id), None)
    code = child.poll() if child is not None else None
    if code is not None and code < 0:
        how = f"was stopped by signal {-code} ({_signal_name(-code)})"
        if -code == signal.SIGKILL:
            how += ", often because the machine ran out of memory"
    elif code:
        how = f"ended with exit code {code}"
    else:
        how = "stopped without reporting a result (it was killed, or the machine restarted)"
    last = _last_log_line(run.id)
    message = f"The training process {how}." + (f' Its last message was: "{last}".' if last else "") + \
        " Nothing else was lost; start the run again."
    if finish_run(store, run.id, "failed", message):
        JobLog(run.id, store).write({"event": "status", "status": "failed", "message": message})


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


def _last_log_line(run_id: int) -> str:
    path = run_folder(run_id) / LOG_FILE
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


# -- reading progress -------------------------------------------------------------------------------------

def read_progress(run_id: int) -> list[dict]:
    """Every event the job wrote so far, in order (a half-written last line is skipped)."""
    path = progress_path(run_id)
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


@dataclass
class JobStatus:
    """A job as a page shows it: status, how far, how long still, last losses, what went wrong."""

    run_id: int
    status: str
    percent: float = 0.0
    eta_seconds: float | None = None
    pace: float | None = None  # a comparison's time so far over its estimate's (its eta is the estimate's rest x it)
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    learning_rate: float | None = None
    examples_per_second: float | None = None
    message: str = ""
    error: str = ""
    warnings: list[dict] = field(default_factory=list)
    queue_position: int | None = None
    result: dict = field(default_factory=dict)
    updated: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def job_status(run_id: int, store: Store | None = None) -> JobStatus:
    """The job's current state (refreshes the queue first, so a dead process shows as failed)."""
    store = store or Store()
    refresh(store)
    run = store.get_run(int(run_id))
    if run is None:
        raise JobError(f"There is no run number {run_id} in this workspace.")
    events = read_progress(run.id)
    status = JobStatus(run_id=run.id, status=run.status, error=run.error, updated=run.updated)
    for event in events:
        kind = event.get("event")
        if kind == "progress":
            if event.get("message"):
                status.message = event["message"]
            for key in ("percent", "eta_seconds", "pace", "step", "total_steps", "epoch", "train_loss",
                        "learning_rate", "examples_per_second"):
                if event.get(key) is not None:
                    setattr(status, key, event[key])
            if event.get("val_loss") is not None:
                status.val_loss, status.val_accuracy = event["val_loss"], event.get("val_accuracy")
        elif kind == "validation":  # many labels: the kept adapter's accuracy, measured once after training
            status.val_accuracy = event.get("val_accuracy")
        elif kind == "warning":
            status.warnings.append({"code": event.get("code"), "message": event.get("message")})
        elif kind == "status" and event.get("message"):
            status.message = event["message"]
    measured = measured_time_left(events) if run.status == "running" else None
    if measured is not None:
        status.eta_seconds = round(measured, 1)
    if run.status == "queued":
        queued = sorted(r.id for r in store.list_runs(status="queued"))
        status.queue_position = queued.index(run.id) + 1 if run.id in queued else None
        status.message = "Waiting for the job before it to finish."
    if run.status == "done":
        status.percent, status.eta_seconds = 100.0, 0.0
        status.result = _read_result(run.id)
    return status


def remember_duration(what: str, seconds: float) -> None:
    """Keep how long something took in this workspace (``durations.json``), to label its button next time."""
    path = workspace_dir() / "durations.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known[what] = round(float(seconds), 1)
    path.write_text(json.dumps(known), encoding="utf-8")


def remembered_duration(what: str) -> float | None:
    try:
        return float(json.loads((workspace_dir() / "durations.json").read_text(encoding="utf-8"))[what])
    except (OSError, ValueError, KeyError, TypeError):
        return None


MEASURED_STEPS = 3  # training steps after the first before the time left comes from measured step times


def measured_time_left(events: list[dict]) -> float | None:
    """Seconds of training left, from how long the steps so far really took (None before a few have run).

    Timed from the first training step on (loading the model and the first validation are over by then), over
    whole validation intervals, so the checks are counted at their real share. A multi-stage job (its
    progress carries messages) or a finished one gives None.
    """
    steps = [e for e in events if e.get("event") == "progress" and e.get("time") and e.get("step")
             and not e.get("message")]
    if len(steps) < 2 or steps[-1]["step"] - steps[0]["step"] < MEASURED_STEPS:
        return None
    first, last = steps[0], steps[-1]
    total = last.get("total_steps") or 0
    done = last["step"] - first["step"]
    if done <= 0 or last["step"] >= total:
        return None
    per_step = (last["time"] - first["time"]) / done
    return max(0.0, per_step * (total - last["step"]))


def _read_result(run_id: int) -> dict:
    try:
        lines = (run_folder(run_id) / RESULT_FILE).read_text(encoding="utf-8").strip().splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def active_jobs(store: Store | None = None) -> list[Run]:
    """Running and queued jobs of this workspace, oldest first: what a restarted app re-attaches to."""
    store = store or Store()
    refresh(store)
    return sorted([*store.list_runs(status="running"), *store.list_runs(status="queued")], key=lambda r: r.id)


def wait(run_id: int, timeout: float = 600.0, poll: float = 0.5, store: Store | None = None) -> JobStatus:
    """Block until the job finishes (or ``timeout`` seconds pass); its last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(run_id, store)
        if status.finished or time.monotonic() > deadline:
            return status
        time.sleep(poll)


def command_line(run_id: int) -> str:
    """The job's command, quoted for a shell (to show on the page)."""
    job = _read_job_file(run_id)
    return shlex.join(job.get("command") or job_command(run_id, job.get("args", [])))


# -- cancelling -------------------------------------------------------------------------------------------

def cancel(run_id: int, *, grace_seconds: float = 15.0, store: Store | None = None) -> JobStatus:
    """Stop a job: a queued one is dropped; a running one gets a stop file, then its process group is killed."""
    store = store or Store()
    message = "Cancelled by the user."
    with _queue_lock():  # a queued job cannot be launched while we look at it
        run = store.get_run(int(run_id))
        if run is None:
            raise JobError(f"There is no run number {run_id} in this workspace.")
        if run.status == "queued" and finish_run(store, run.id, "cancelled", message):
            JobLog(run.id, store).write({"event": "status", "status": "cancelled", "message": message})
    if run.status == "running":
        (run_folder(run.id) / STOP_FILE).touch()
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and _process_alive(run):
            time.sleep(0.2)
        if _process_alive(run):
            _kill_group(run.pid, signal.SIGTERM)
            time.sleep(2.0)
            if _process_alive(run):
                _kill_group(run.pid, signal.SIGKILL)
            message = "Cancelled by the user (the process had to be stopped)."
        _children.pop(_child_key(run.id), None)
    if finish_run(store, run.id, "cancelled", message):
        JobLog(run.id, store).write({"event": "status", "status": "cancelled", "message": message})
    refresh(store)
    return job_status(run.id, store)


def _kill_group(pid: int | None, sig: int) -> None:
    if not pid:
        return
    try:
        os.killpg(os.getpgid(pid), sig)
    except (ProcessLookupError, PermissionError):
        pass
    _reap(pid)
