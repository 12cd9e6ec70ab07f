"""Fine-tuning in a real browser: upload a CSV, start the quickest preset, reload mid-run, download the adapter.

The server trains the tiny test model ($PVF_MODEL, see conftest.py), so a run takes seconds, not minutes.
"""

from __future__ import annotations

import zipfile

import pytest

pytestmark = pytest.mark.browser

RUN_TIMEOUT = 300_000  # ms: the job loads the model in a fresh process, trains and scores, on a busy machine


def moods_csv(path) -> None:
    """60 short messages with two labels that follow from their words."""
    rows = ["text,label"]
    for i in range(60):
        happy = i % 2 == 0
        rows.append(f"message {i}: {'thanks it works great now' if happy else 'still broken and very annoyed'},"
                    f"{'happy' if happy else 'unhappy'}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def run_line(page):
    """The line under "4. Train" that names the run on show."""
    return page.get_by_test_id("stMarkdownContainer").filter(has_text="Run #")


def test_train_follow_it_through_a_reload_and_download_the_adapter(app_url, page, tmp_path):
    from playwright.sync_api import expect

    upload = tmp_path / "moods.csv"
    moods_csv(upload)
    page.goto(app_url)
    page.get_by_text("Upload a CSV", exact=True).click()
    page.locator("input[type=file]").first.set_input_files(str(upload))
    expect(page.get_by_text("moods.csv: 60 rows", exact=False)).to_be_visible()
    page.get_by_role("button", name="Use this dataset").click()
    expect(page.get_by_text("Selected:", exact=False)).to_contain_text("moods.csv")

    page.locator("[data-testid=stSidebarNavLink]", has_text="Fine-tuning wizard").click()
    expect(page.get_by_role("heading", name="3. Estimate")).to_be_visible()
    expect(page.get_by_text("Only 42 training rows.", exact=False)).to_be_visible()  # small data is warned about
    page.get_by_role("button", name="Use Quick").click()
    expect(page.get_by_role("button", name="Use Balanced")).to_be_visible()  # Quick is the chosen one now
    page.get_by_role("button", name="Start training").click()

    expect(page.get_by_role("heading", name="4. Train")).to_be_visible()
    expect(run_line(page)).to_contain_text("Quick, 42 training rows")
    assert "run=" in page.url
    page.set_viewport_size({"width": 1300, "height": 1600})
    page.screenshot(path=str(tmp_path / "wizard-started.png"))

    page.reload()  # mid-run: the page finds the job again from ?run= and follows it
    expect(page.get_by_role("heading", name="4. Train")).to_be_visible()
    expect(run_line(page)).to_contain_text("Quick, 42 training rows")
    expect(page.get_by_test_id("stProgress")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel training")).to_be_visible()
    page.screenshot(path=str(tmp_path / "wizard-reloaded.png"))

    expect(page.get_by_role("heading", name="5. Result")).to_be_visible(timeout=RUN_TIMEOUT)
    expect(page.get_by_text("Finished: trained and scored on the test rows.")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel training")).to_have_count(0)
    page.set_viewport_size({"width": 1300, "height": 2600})
    page.wait_for_timeout(1000)  # let the charts draw
    page.screenshot(path=str(tmp_path / "wizard-result.png"))

    with page.expect_download() as download:
        page.get_by_role("button", name="Download the adapter (.zip)").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name.startswith("pvf-adapter-run") and saved.suffix == ".zip"
    with zipfile.ZipFile(saved) as archive:
        names = set(archive.namelist())
        assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= names, names
        assert "base_model:" in archive.read("README.md").decode("utf-8")
