"""The app through Streamlit's AppTest: Home with the sample and with uploads, and every page's dataset banner.

The Home page measures token lengths with the bundled model's tokenizer (converted once into
$PVF_MODEL_CACHE); nothing here loads model weights.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import FIXTURES, ROOT, dataset_path
from pvf_core.samples import SAMPLE_NAME

WORK_PAGES = ["pages/prompt_builder.py", "pages/finetune_wizard.py", "pages/compare.py"]
TIMEOUT = 120  # the first run in a process imports pandas, sklearn, plotly and reads the tokenizer


@pytest.fixture
def app(monkeypatch) -> AppTest:
    monkeypatch.chdir(ROOT)
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def use_dataset(at: AppTest) -> AppTest:
    run(at.button(key="home_use").click())
    assert any(s.startswith("Selected: **") for s in texts(at.success)), texts(at.success)
    return at


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    if at.radio(key="home_source").value != "Upload a CSV":
        run(at.radio(key="home_source").set_value("Upload a CSV"))
    return run(at.file_uploader(key="home_upload").set_value((name, data, "text/csv")))


def task_radio(at: AppTest):
    return next(r for r in at.radio if r.label == "Task")


def metrics(at: AppTest) -> dict[str, int]:
    return {m.label: int(m.value.replace(",", "")) for m in at.metric}


def test_home_with_the_sample_then_every_page(app):
    at = run(app)
    assert at.title[0].value.startswith("Prompt or fine-tune?")
    assert at.radio(key="home_source").value == "Sample: support tickets"
    found = metrics(at)
    assert found["Rows"] == 480
    assert found["Train"] + found["Validation"] + found["Test"] == 480
    assert found["Test"] == pytest.approx(96, abs=3)
    assert "No problems found." in texts(at.success)
    assert any("tokens long in the median" in t for t in texts(at.info))  # the length check ran
    assert at.button(key="home_use").disabled is False

    use_dataset(at)
    assert at.query_params.get("dataset") == "1"
    selected = [s for s in texts(at.success) if s.startswith("Selected:")][0]
    assert SAMPLE_NAME in selected and "classification" in selected

    for page in WORK_PAGES:
        run(at.switch_page(page))
        captions = texts(at.caption)
        assert any(c.startswith(f"Dataset: **{SAMPLE_NAME}** · classification") for c in captions), (page, captions)
        assert not any("Pick a dataset first" in i for i in texts(at.info))
        assert at.query_params.get("dataset") == "1"  # survives page switches
    run(at.switch_page("pages/home.py"))
    assert any(s.startswith("Selected:") for s in texts(at.success))


@pytest.mark.parametrize("page", WORK_PAGES)
def test_pages_without_a_dataset_ask_for_one(app, page):
    run(app)
    run(app.switch_page(page))
    assert any(i.startswith("Pick a dataset first") for i in texts(app.info))
    assert not any(c.startswith("Dataset:") for c in texts(app.caption))


def test_upload_a_csv_and_use_it(app):
    at = run(app)
    run(at.radio(key="home_source").set_value("Upload a CSV"))
    assert any(i.startswith("Upload a CSV with one column of text") for i in texts(at.info))
    assert not at.metric
    upload(at, "trec.csv", dataset_path("trec_test.csv").read_bytes())
    assert any(c.startswith("trec.csv: 500 rows, read as utf-8, separated by commas.") for c in texts(at.caption))
    assert metrics(at)["Rows"] == 500
    assert any("as common as" in w for w in texts(at.warning))  # class_imbalance: abbreviation has 9 rows
    assert task_radio(at).value == "classification"
    use_dataset(at)
    selected = [s for s in texts(at.success) if s.startswith("Selected:")][0]
    assert "trec.csv" in selected
    run(at.switch_page("pages/compare.py"))
    assert any(c.startswith("Dataset: **trec.csv** · classification") for c in texts(at.caption))


def test_upload_text_to_text_and_awkward_encodings(app):
    at = upload(run(app), "jfleg.csv", dataset_path("jfleg_test.csv").read_bytes())
    assert task_radio(at).value == "text-to-text"
    assert metrics(at)["Rows"] == 747
    upload(at, "accents.csv", (FIXTURES / "bad_csv" / "cp1252.csv").read_bytes())
    assert any(c.startswith("accents.csv: 40 rows, read as cp1252, separated by commas.") for c in texts(at.caption))
    assert any("not UTF-8" in i for i in texts(at.info))
    upload(at, "semi.csv", (FIXTURES / "bad_csv" / "excel_sep_line.csv").read_bytes())
    assert any(c.startswith("semi.csv: 40 rows, read as utf-8, separated by semicolons.") for c in texts(at.caption))


def test_a_bad_upload_shows_a_plain_error_and_keeps_the_selection(app):
    at = use_dataset(run(app))
    upload(at, "photo.csv", (FIXTURES / "bad_csv" / "png_renamed.csv").read_bytes())
    errors = texts(at.error)
    assert errors == ["**This file cannot be used.** 'photo.csv' does not look like a CSV file: it contains a PNG "
                      "image.  \nExport the data as CSV (comma- or semicolon-separated text) and upload that."]
    assert not at.metric and not at.exception
    assert any(s.startswith(f"Selected: **{SAMPLE_NAME}**") for s in texts(at.success))  # previous choice kept
    assert at.query_params.get("dataset") == "1"
    upload(at, "one.csv", b"text,label\nonly one row,a\n")
    assert any("only 1 row" in e for e in texts(at.error))
    assert any(s.startswith(f"Selected: **{SAMPLE_NAME}**") for s in texts(at.success))


def test_a_dataset_with_an_error_finding_cannot_be_used(app):
    at = upload(run(app), "one_class.csv", (FIXTURES / "bad_csv" / "one_class_only.csv").read_bytes())
    assert any("Every row has the same answer" in e for e in texts(at.error))
    assert at.button(key="home_use").disabled is True


def test_reload_keeps_the_dataset(app, monkeypatch):
    use_dataset(run(app))
    reloaded = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)  # a new browser session
    reloaded.query_params["dataset"] = "1"
    run(reloaded)
    assert any(s.startswith(f"Selected: **{SAMPLE_NAME}**") for s in texts(reloaded.success))
    run(reloaded.switch_page("pages/prompt_builder.py"))
    assert any(c.startswith(f"Dataset: **{SAMPLE_NAME}**") for c in texts(reloaded.caption))


def test_a_stale_link_shows_one_error_and_is_forgotten(app):
    app.query_params["dataset"] = "42"
    at = run(app)
    assert any("no dataset number 42" in e for e in texts(at.error))
    assert "dataset" not in at.query_params
    run(at.switch_page("pages/compare.py"))
    assert not at.error
    assert any(i.startswith("Pick a dataset first") for i in texts(at.info))


def test_a_dataset_used_before_can_be_picked_again(app):
    at = use_dataset(run(app))
    run(at.radio(key="home_source").set_value("A dataset you used before"))
    choice = at.selectbox(key="home_previous")
    assert choice.value.id == 1 and "480 rows" in choice.format_func(choice.value)
    run(at.button(key="home_use_previous").click())
    assert any(s.startswith(f"Selected: **{SAMPLE_NAME}**") for s in texts(at.success))


def test_no_dataset_used_before(app):
    at = run(app)
    run(at.radio(key="home_source").set_value("A dataset you used before"))
    assert any(i.startswith("No dataset has been used in this workspace yet") for i in texts(at.info))
