"""Images in a real browser: upload a zip of labelled images → health check → label mapping → compare."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.browser


def test_upload_image_zip_and_compare(app_url, page, tmp_path):
    from playwright.sync_api import expect

    sys.path.insert(0, str(ROOT / "tests"))
    from images_support import labelled_files, make_zip

    upload = make_zip(tmp_path / "colours.zip", labelled_files(12, ("red", "blue")) | {"red/notes.txt": b"x"})
    page.goto(app_url)
    page.get_by_role("link", name="Images").click()
    expect(page.get_by_role("heading", name="Images: prompt or fine-tune?")).to_be_visible()
    page.locator("input[type=file]").first.set_input_files(str(upload))
    expect(page.get_by_role("heading", name="2. Health check")).to_be_visible()
    expect(page.get_by_text("24 images", exact=False).first).to_be_visible()
    expect(page.get_by_text("red/notes.txt", exact=False).first).to_be_visible()  # the non-image, named
    page.get_by_role("button", name="Fine-tune and compare").click()
    expect(page.get_by_text("Recommendation: use", exact=False)).to_be_visible(timeout=300_000)
    expect(page.get_by_role("heading", name="Images the arms disagree on")).to_be_visible()
    assert "images_run=" in page.url  # a reload reopens the comparison
    page.screenshot(path=str(tmp_path / "images.png"), full_page=True)
