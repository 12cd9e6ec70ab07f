"""A finished long job raises a notice on whatever page the user is on."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from apptest_support import run
from conftest import ROOT
from pvf_core.store import Store
from ui.notices import WATCHED_KEY


def test_a_job_that_ended_since_the_last_run_raises_a_toast_once(workspace, monkeypatch):
    monkeypatch.chdir(ROOT)
    store = Store()
    trained = store.add_run("finetune", name="Balanced, 400 training rows", status="done")
    failed = store.add_run("compare", name="", status="failed")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[WATCHED_KEY] = {trained: "Training “Balanced, 400 training rows”", failed: "The comparison"}
    at = run(at)
    notices = sorted(t.value for t in at.toast)
    assert notices == ["The comparison failed.", "Training “Balanced, 400 training rows” finished."]
    assert at.session_state[WATCHED_KEY] == {}
    at = run(at.switch_page("pages/use.py"))
    assert not at.toast  # said once


def test_nothing_running_means_nothing_watched(workspace, monkeypatch):
    monkeypatch.chdir(ROOT)
    at = run(AppTest.from_file(str(ROOT / "app.py"), default_timeout=60))
    assert at.session_state[WATCHED_KEY] == {} and not at.toast
