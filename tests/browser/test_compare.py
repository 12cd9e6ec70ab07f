"""The product's answer in a real browser: upload → standard comparison (tiny model) → recommendation → export."""

from __future__ import annotations

import pandas as pd
import pytest

from pvf_core.samples import sample_rows

pytestmark = pytest.mark.browser


def test_upload_compare_recommend_export(app_url, page, tmp_path):
    from playwright.sync_api import expect

    upload = tmp_path / "tickets.csv"
    pd.DataFrame(sample_rows(120, seed=11), columns=["message", "team"]).to_csv(upload, index=False)

    page.goto(app_url)
    page.get_by_text("Upload a CSV", exact=True).click()
    page.locator("input[type=file]").first.set_input_files(str(upload))
    expect(page.get_by_role("heading", name="3. Health check")).to_be_visible()
    page.get_by_role("button", name="Use this dataset").click()
    expect(page.get_by_text("Selected:", exact=False)).to_contain_text("tickets.csv")

    page.get_by_role("link", name="Compare both").click()
    expect(page.get_by_role("heading", name="Compare prompting and fine-tuning")).to_be_visible()
    page.get_by_role("button", name="Run the standard comparison").click()
    expect(page.get_by_text("Recommendation: use", exact=False)).to_be_visible(timeout=240_000)
    expect(page.get_by_text("Is the difference real?")).to_be_visible()
    assert "comparison=" in page.url  # a permalink
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Report (HTML)").click()
    report = download_info.value.path().read_text(encoding="utf-8")
    assert "PvF Studio comparison: tickets.csv" in report and "Use " in report
    assert "plotly" in report.lower()  # charts embedded, works offline
