"""Page response under load: N visitors click through the demo while a training job runs, against idle.

    .venv/bin/python bench/bench_load.py                    # 5 visitors, the tiny model trains
    .venv/bin/python bench/bench_load.py --model bundled    # the bundled model trains (heavier)

One run does everything on one machine: it starts PvF Studio in demo mode (its own $PVF_HOME, a free port)
and opens N headless chromium contexts at once, each a separate visitor with a private workspace. Each
visitor uploads its own small CSV and uses it, then the timed rounds begin; in a round every visitor, at
the same time, clicks through Prompt builder, Fine-tuning wizard, Compare and Home. A page view is timed
from the click until the page's title is shown and the script has finished (Streamlit's script state is
``notRunning``). Rounds alternate idle / load / load / idle, so a drift of the shared machine shows in both;
during the load rounds a fine-tuning job of one visitor runs in the background (the CLI as a subprocess,
as the app starts it). It prints median and p95 page response per phase and the ratio load / idle, then
checks that every visitor's dataset list holds only the sample and its own upload.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = os.environ.get("PVF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
PAGES = [("Prompt builder", "Prompt builder"), ("Fine-tuning wizard", "Fine-tuning"), ("Compare", "Compare"),
         ("Home", "Prompt or fine-tune")]  # (sidebar link, start of the page's title)
TIMEOUT_MS = 120_000


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=5, help="visitors clicking at the same time")
    p.add_argument("--model", default="tiny", help="'tiny' (a random 2-layer model) or 'bundled'")
    p.add_argument("--port", type=int, default=0)
    return p.parse_args()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PVF_HOME": str(home), "PVF_DEMO": "1", "PVF_DEMO_MAX_TRAIN_MINUTES": "60",
           "PVF_DEMO_MIN_FREE_MB": "0", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
               "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(home / "streamlit.log", "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    raise SystemExit("streamlit did not start: " + (home / "streamlit.log").read_text()[-2000:])


def own_csv(k: int) -> str:
    return "text,label\n" + "".join(f"visitor {k} private row {i} about {'cats' if i % 2 else 'dogs'},"
                                    f"{'cat' if i % 2 else 'dog'}\n" for i in range(40))


async def finished(page) -> None:
    await page.locator("[data-test-script-state=notRunning]").wait_for(state="attached", timeout=TIMEOUT_MS)


async def open_visitor(browser, url: str, k: int, folder: Path):
    context = await browser.new_context(viewport={"width": 1300, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(url)
    await page.get_by_text("Selected:", exact=False).wait_for()
    path = folder / f"visitor_{k}.csv"
    path.write_text(own_csv(k))
    await page.get_by_text("Upload a CSV", exact=True).click()
    await page.locator("input[type=file]").first.set_input_files(str(path))
    await page.get_by_text(f"visitor_{k}.csv: 40 rows", exact=False).wait_for()
    await page.get_by_role("button", name="Use this dataset").click()
    await page.locator("[data-testid=stAlertContentSuccess]", has_text=f"visitor_{k}.csv").wait_for()
    await finished(page)
    return context, page


async def click_through(page) -> list[float]:
    times = []
    for link, title in PAGES:
        started = time.perf_counter()
        await page.locator("[data-testid=stSidebarNavLink]", has_text=link).click()
        await page.get_by_role("heading", level=1).filter(has_text=title).first.wait_for()
        await finished(page)
        times.append(time.perf_counter() - started)
    return times


async def round_(pages) -> list[float]:
    results = await asyncio.gather(*(click_through(p) for p in pages))
    return [t for r in results for t in r]


async def isolation_check(pages) -> list[str]:
    problems = []
    for k, page in enumerate(pages):
        await page.get_by_text("A dataset you used before", exact=True).click()
        await page.locator("[data-testid=stSelectbox]", has_text="Dataset").click()  # once the page has rerun
        await page.get_by_role("option").first.wait_for()
        options = [await o.inner_text() for o in await page.get_by_role("option").all()]
        await page.keyboard.press("Escape")
        others = [o for o in options if "visitor_" in o and f"visitor_{k}.csv" not in o]
        if len(options) != 2 or others or not any(f"visitor_{k}.csv" in o for o in options):
            problems.append(f"visitor {k} sees {options}")
    return problems


def start_training(home: Path, model: str) -> tuple[int, Path]:
    """A fine-tuning job in the first visitor's workspace, as the app would start it."""
    from pvf_core import demo, jobs
    from pvf_core.data import load_dataset
    from pvf_core.finetune import preset_settings
    from pvf_core.models import make_tiny_model
    from pvf_core.store import use_workspace

    os.environ["PVF_HOME"] = str(home)
    folder = sorted(demo.session_folders(), key=lambda f: f.stat().st_mtime)[0]
    if model == "tiny":
        model = str(make_tiny_model(home / "tiny-model"))
    with use_workspace(folder):
        dataset = load_dataset(1)
        settings = preset_settings("quick", epochs=50)
        return jobs.start_finetune(dataset.splits, settings, model=model, dataset_id=1), folder


def wait_training(run_id: int, folder: Path) -> None:
    from pvf_core import jobs
    from pvf_core.store import use_workspace

    deadline = time.monotonic() + 300
    with use_workspace(folder):
        while time.monotonic() < deadline:
            status = jobs.job_status(run_id)
            if status.step > 0:
                return
            if status.finished:
                raise SystemExit(f"the training job ended early: {status.status} {status.error}")
            time.sleep(1)
    raise SystemExit("the training job did not start within 5 minutes")


def stop_training(run_id: int, folder: Path) -> dict:
    from pvf_core import jobs
    from pvf_core.store import use_workspace

    with use_workspace(folder):
        status = jobs.job_status(run_id)
        jobs.cancel(run_id, grace_seconds=5)
    return {"steps": status.step, "status_while_measuring": status.status}


def p95(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):6.2f} s   p95 {p95(times):6.2f} s   ({len(times)} page views)"


async def main(args: argparse.Namespace) -> int:
    from playwright.async_api import async_playwright

    os.environ.setdefault("PVF_MODEL_CACHE", str(Path.home() / ".cache" / "pvf-studio-test-models"))
    scratch = Path(tempfile.mkdtemp(prefix="pvf-bench-load-"))
    home = scratch / "home"
    home.mkdir()
    port = args.port or free_port()
    server = start_server(home, port)
    url = f"http://127.0.0.1:{port}"
    job: tuple[int, Path] | None = None
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            started = time.perf_counter()
            visitors = await asyncio.gather(*(open_visitor(browser, url, k, scratch) for k in range(args.sessions)))
            print(f"{args.sessions} visitors arrived and each used its own upload in "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
            pages = [page for _, page in visitors]
            await round_(pages)  # warm-up: every page once per visitor (imports, caches)
            phases: dict[str, list[float]] = {"idle": [], "load": []}
            for phase in ("idle", "load", "load", "idle"):
                if phase == "load" and job is None:
                    job = start_training(home, args.model)
                    wait_training(*job)
                if phase == "idle" and job is not None:
                    print(f"training job: {stop_training(*job)}", flush=True)
                    job = None
                times = await round_(pages)
                phases[phase] += times
                print(f"{phase:5s} round: {summary(times)}", flush=True)
            problems = await isolation_check(pages)
            await browser.close()
    finally:
        if job is not None:
            stop_training(*job)
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(scratch, ignore_errors=True)
    idle, load = phases["idle"], phases["load"]
    print(f"\n{args.sessions} visitors clicking through 4 pages at once; training model: {args.model}")
    print(f"idle : {summary(idle)}")
    print(f"load : {summary(load)}")
    print(f"ratio load / idle: median page response {statistics.median(load) / statistics.median(idle):.2f}, "
          f"p95 {p95(load) / p95(idle):.2f}")
    print("isolation: " + ("every visitor saw only the sample and its own upload" if not problems
                           else "PROBLEM: " + "; ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
