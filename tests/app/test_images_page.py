"""The Images page through AppTest: health check, label prompting's mapping, then fine-tune and compare (tiny backbone)."""

from __future__ import annotations

import sys

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import ROOT
from pvf_core import jobs

sys.path.insert(0, str(ROOT / "tests"))
from images_support import labelled_files, make_zip  # noqa: E402

TIMEOUT = 120
PAGE = "pages/images.py"


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    from pvf_core.images.models import make_tiny_backbone

    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone"), image_size=32))


@pytest.fixture
def app(monkeypatch, tiny_backbone) -> AppTest:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PVF_IMAGE_MODEL", tiny_backbone)
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


@pytest.fixture
def zips(tmp_path):
    labels = ("red", "blue", "green")
    train = make_zip(tmp_path / "train.zip", labelled_files(10, labels) | {"red/readme.txt": b"notes"})
    test = make_zip(tmp_path / "test.zip", labelled_files(4, labels, start=700))
    return str(train), str(test)


def test_without_images_the_page_asks_for_a_zip(app):
    at = run(app)
    run(at.switch_page(PAGE))
    assert any("Upload a zip" in i.value for i in at.info)


def test_upload_check_describe_and_compare(app, zips):
    at = run(app)
    at.switch_page(PAGE)
    at.session_state["img_train_path"], at.session_state["img_test_path"] = zips  # what an upload stores
    run(at)
    markdown = " ".join(texts(at.markdown))
    assert "42 images" in markdown and "3 labels" in markdown
    assert any("readme.txt" in w.value for w in at.warning)  # the non-image file, named
    mapping = at.dataframe[0].value.set_index("label")
    assert sorted(mapping.index) == ["blue", "green", "red"] and mapping.loc["blue", "imagenet_classes"] != "jean"
    run(at.text_input(key="img_desc_blue").set_value("jean"))
    assert at.dataframe[0].value.set_index("label").loc["blue", "imagenet_classes"] == "jean"
    run(at.button(key="img_run").click())
    started = [r for r in jobs.Store().list_runs(kind="compare")]
    assert started and started[0].settings["describe"] == "blue=jean"
    status = jobs.wait(started[0].id, timeout=300)
    assert status.status == "done", status.error
    run(at)
    assert any("Recommendation" in s.value for s in at.subheader)
    assert any("disagree" in s.value for s in at.subheader)
