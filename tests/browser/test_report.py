"""The HTML report in a real browser: it fits the page, its charts keep their axis labels and class names,
and its table uses the page's plain column names. The screenshot is kept in the test's folder."""

from __future__ import annotations

import shutil

import pytest

from conftest import ROOT

pytestmark = pytest.mark.browser


def test_the_report_fits_the_page_and_names_everything(browser, tmp_path):
    from pvf_core.compare import Comparison
    from pvf_core.report import readable_metrics_table, write_report

    shutil.copyfile(ROOT / "pvf_core" / "assets" / "sample_comparison.json", tmp_path / "comparison.json")
    comparison = Comparison.load(tmp_path)
    html = write_report(comparison, tmp_path / "report")["html"]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.goto(f"file://{html}")
        page.wait_for_selector(".main-svg")
        page.wait_for_timeout(500)
        assert page.evaluate("document.documentElement.scrollWidth") <= 1200  # nothing wider than the page
        header = page.locator("table").first.locator("th").all_inner_texts()
        assert [h.replace("\n", " ") for h in header] == list(readable_metrics_table(comparison).columns)
        assert not any("_" in h for h in header)  # no raw column names
        ticks = page.locator(".xtick text").all_text_contents()
        for label in comparison.labels:
            assert label in ticks, (label, ticks)  # class names on the confusion matrices
        titles = page.locator(".g-xtitle text, .g-ytitle text").all_text_contents()
        assert "model's answer" in titles and "true answer" in titles and "accuracy (%)" in titles
        for title in page.locator(".g-xtitle text, .g-ytitle text").all():  # axis titles inside the page
            box = title.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 1200
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
        page.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
