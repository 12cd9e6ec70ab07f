"""A user's first journey in a real browser: upload a CSV, read the health check, use the dataset."""

from __future__ import annotations

import pytest

from conftest import dataset_path

pytestmark = pytest.mark.browser


def test_upload_check_and_use_a_dataset(app_url, page, tmp_path):
    from playwright.sync_api import expect

    upload = tmp_path / "questions.csv"
    upload.write_bytes(dataset_path("trec_test.csv").read_bytes())  # 500 rows, 6 unbalanced classes

    page.goto(app_url)
    expect(page.get_by_role("heading", name="Prompt or fine-tune? Measure it on your data.")).to_be_visible()
    page.get_by_text("Upload a CSV", exact=True).click()
    page.locator("input[type=file]").first.set_input_files(str(upload))

    expect(page.get_by_text("questions.csv: 500 rows, read as utf-8, separated by commas.")).to_be_visible()
    expect(page.get_by_role("heading", name="3. Health check")).to_be_visible()
    expect(page.get_by_text("as common as", exact=False).first).to_be_visible()  # the class_imbalance finding

    page.get_by_role("button", name="Use this dataset").click()
    selected = page.get_by_text("Selected:", exact=False)
    expect(selected).to_be_visible()
    expect(selected).to_contain_text("questions.csv")
    assert "dataset=" in page.url  # a reload or a shared link opens the same dataset
    page.screenshot(path=str(tmp_path / "journey.png"), full_page=True)
    assert (tmp_path / "journey.png").stat().st_size > 10_000
