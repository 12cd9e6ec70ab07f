"""The public demo in a real browser: two visitors, each with a private workspace, the limits up front.

A second server runs here in demo mode (``PVF_DEMO=1``) with a fake hub token in its environment, which
must never show up in its log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from browser.conftest import START_TIMEOUT, _healthy, _stop, free_port
from conftest import ROOT

pytestmark = pytest.mark.browser

WAIT = 60_000  # ms: the first page of a fresh session on a busy machine
FAKE_TOKEN = "hf_" + "NeverPrintThisToken" * 2
OWN_CSV = "text,label\n" + "".join(f"alice private row {i} about {'cats' if i % 2 else 'dogs'},"
                                   f"{'cat' if i % 2 else 'dog'}\n" for i in range(40))


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """A PvF Studio in demo mode; yields its URL and log path."""
    home = tmp_path_factory.mktemp("demo-pvf-home")
    log_path = home.parent / "demo-streamlit.log"
    port = free_port()
    env = {**os.environ, "PVF_HOME": str(home), "PVF_DEMO": "1", "PVF_DEMO_MIN_FREE_MB": "0",
           "HF_TOKEN": FAKE_TOKEN}
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url, log_path, home
    finally:
        _stop(process)


def nav(page, title: str) -> None:
    page.locator("[data-testid=stSidebarNavLink]", has_text=title).click()


def test_two_visitors_each_get_a_private_demo(demo_server, browser, tmp_path):
    from playwright.sync_api import expect

    url, log_path, home = demo_server
    upload = tmp_path / "alice_private.csv"
    upload.write_text(OWN_CSV)

    alice = browser.new_context(viewport={"width": 1300, "height": 1000})
    alice.set_default_timeout(60_000)
    page = alice.new_page()
    started = time.monotonic()
    page.goto(url)
    # The limits are told up front, and the sample is ready to use.
    expect(page.get_by_text("Public demo.", exact=True)).to_be_visible(timeout=WAIT)
    expect(page.get_by_text("CSV files may have up to 2 MB and 5,000 rows.")).to_be_visible()
    expect(page.get_by_text("Selected:", exact=False)).to_contain_text("support_tickets_sample.csv")
    # A ready-made comparison, seconds after arriving.
    nav(page, "Compare")
    expect(page.get_by_text("Recommendation: use", exact=False)).to_be_visible(timeout=WAIT)
    seconds_to_comparison = time.monotonic() - started
    assert seconds_to_comparison < 60, seconds_to_comparison
    page.screenshot(path=str(tmp_path / "demo-compare.png"), full_page=True)
    # To show Bob the comparison she shares a read-only copy; its link opens that copy, not her workspace.
    page.get_by_role("button", name="Share a read-only copy").click()
    shared_link = page.get_by_test_id("stCode").last.inner_text(timeout=WAIT).strip()
    assert "/compare?shared=" in shared_link and "&" not in shared_link

    # Alice brings her own data.
    nav(page, "Home")
    page.get_by_text("Upload a CSV", exact=True).click()
    page.locator("input[type=file]").first.set_input_files(str(upload))
    expect(page.get_by_text("alice_private.csv: 40 rows", exact=False)).to_be_visible(timeout=WAIT)
    page.get_by_role("button", name="Use this dataset").click()
    expect(page.get_by_text("Selected:", exact=False)).to_contain_text("alice_private.csv", timeout=WAIT)
    alice_url = page.url
    assert "dataset=2" in alice_url and "s=" in alice_url

    # A reload keeps her work (the session id in the address), until its time to live ends.
    page.reload()
    expect(page.get_by_text("Selected:", exact=False)).to_contain_text("alice_private.csv", timeout=WAIT)

    # Bob opens the shared link, then Alice's page address with its session id taken out: only his own data.
    bob = browser.new_context(viewport={"width": 1300, "height": 1000})
    bob.set_default_timeout(60_000)
    other = bob.new_page()
    other.goto(shared_link)
    expect(other.get_by_text("A comparison someone shared with you", exact=False)).to_be_visible(timeout=WAIT)
    expect(other.get_by_text("Recommendation: use", exact=False)).to_be_visible(timeout=WAIT)
    assert "alice" not in other.content()
    other.goto(re.sub(r"([?&])s=[0-9a-f]+&?", r"\1", alice_url))
    expect(other.get_by_text("Selected:", exact=False)).to_contain_text("support_tickets_sample.csv", timeout=WAIT)
    other.get_by_text("A dataset you used before", exact=True).click()
    other.locator("[data-testid=stSelectbox]", has_text="Dataset").click(timeout=WAIT)  # after the rerun
    expect(other.get_by_role("option")).to_have_count(1)
    expect(other.get_by_role("option")).to_contain_text("#1 support_tickets_sample.csv")
    assert "alice" not in other.content()
    for title in ("Prompt builder", "Fine-tuning wizard", "Compare"):
        other.keyboard.press("Escape")
        nav(other, title)
        other.wait_for_timeout(500)
        assert "alice" not in other.content(), title

    # One workspace per session; in the shared folder only the model cache, the sessions and the shared copy.
    # (Bob's two page loads without a session id in the address were two fresh sessions.)
    sessions = sorted(p.name for p in (home / "sessions").iterdir())
    assert len(sessions) == 3
    assert sorted(p.name for p in home.iterdir() if p.name != "models") == ["sessions", "shared"]
    bob.close()
    alice.close()
    log = log_path.read_text(errors="replace")
    assert FAKE_TOKEN not in log and "Traceback" not in log, log[-2000:]


FRAGMENT_APP = '''
import streamlit as st
from pvf_core.store import workspace
from ui import session

session.enter()
st.write(f"run in {workspace().name}")


@st.fragment(run_every=0.5)
def tick():
    st.session_state["ticks"] = st.session_state.get("ticks", 0) + 1
    st.write(f"fragment {st.session_state['ticks']} in {workspace().name}")


tick()
'''


def test_fragments_rerun_in_the_sessions_workspace(browser, tmp_path):
    """A fragment's timed rerun runs in a fresh thread without the script run's context: the app's resolver
    must still give it the session's workspace (the job progress on the work pages polls this way)."""
    from playwright.sync_api import expect

    script = tmp_path / "fragment_app.py"
    script.write_text(FRAGMENT_APP)
    home = tmp_path / "home"
    port = free_port()
    env = {**os.environ, "PVF_HOME": str(home), "PVF_DEMO": "1", "PVF_DEMO_MIN_FREE_MB": "0",
           "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                                    "--server.address", "127.0.0.1", "--server.headless", "true",
                                    "--browser.gatherUsageStats", "false"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(url):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()[-2000:]
            time.sleep(0.5)
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        run_line = page.get_by_text("run in ", exact=False)
        expect(run_line).to_be_visible(timeout=WAIT)
        session_id = run_line.inner_text().split()[-1]
        assert len(session_id) == 32
        # timed reruns: the count only grows, so wait for any count from 6 on (polling may miss "6" itself)
        later = page.get_by_text(re.compile(r"fragment ([6-9]|\d{2,}) in"))
        expect(later).to_be_visible(timeout=WAIT)
        assert later.inner_text().split()[-1] == session_id
        context.close()
        assert not (home / "pvf.sqlite").exists()
    finally:
        _stop(process)
