"""An idle server is idle: with a page open and nothing happening, PvF Studio uses almost no CPU.

The app is started with the command of the Makefile's ``run`` target (read from the Makefile, so the test
follows it), with no extra command-line settings: whatever `.streamlit/config.toml` says is what users get.
A file watcher walking the source tree (and the `.venv` inside it) once kept a whole core busy.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT

from browser.conftest import START_TIMEOUT, _healthy, _stop, free_port

pytestmark = pytest.mark.browser

IDLE_SECONDS = 20
MAX_CORE_SHARE = 0.10  # of one core


def make_run_command(port: int) -> list[str]:
    """The Makefile's `run` recipe with its variables filled in."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.+)$", text, flags=re.M)
    assert recipe, "the Makefile has no run target"
    line = recipe.group(1).replace("$(VENV)", ".venv").replace("$(PORT)", str(port))
    assert "$(" not in line, f"unexpected variable in the run recipe: {line}"
    return shlex.split(line)


def cpu_seconds(group: int) -> float:
    """User + system CPU time of every process in the process group ``group`` (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # field 5 of stat: the process group id
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def inotify_watches(pid: int) -> int:
    """How many files and folders the process watches through inotify (a file watcher's footprint)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == "anon_inode:inotify":
                count += (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text().count("inotify wd:")
        except OSError:
            continue
    return count


def test_make_run_command_has_no_watcher_flag():
    command = make_run_command(8501)
    assert command[:3] == [".venv/bin/streamlit", "run", "app.py"]
    assert not any("fileWatcher" in part for part in command), "the config file, not a flag, turns it off"


def test_idle_server_with_a_page_open_uses_under_a_tenth_of_a_core(tmp_path, browser):
    from playwright.sync_api import expect

    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc")
    port = free_port()
    command = make_run_command(port)
    command[0] = str(ROOT / command[0])
    env = {**os.environ, "PVF_HOME": str(tmp_path / "home")}
    env.pop("PVF_MODEL", None)
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(url):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.5)
        page = context.new_page()
        page.goto(url)
        expect(page.get_by_role("button", name="Use this dataset")).to_be_visible(timeout=60_000)
        time.sleep(3)  # let the first run's imports settle
        before, started = cpu_seconds(process.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        used, elapsed = cpu_seconds(process.pid) - before, time.monotonic() - started
        share = used / elapsed
        watches = inotify_watches(process.pid)
        log = log_path.read_text(errors="replace")
        assert "Inotify" not in log, log[-2000:]
        assert watches == 0, f"the server watches {watches} files and folders: is the file watcher on again?"
        assert share < MAX_CORE_SHARE, f"the idle server used {share:.0%} of a core ({used:.2f} s in {elapsed:.0f} s)"
        print(f"idle server: {used:.2f} s of CPU in {elapsed:.0f} s ({share:.1%} of a core), {watches} watches")
    finally:
        context.close()
        _stop(process)
