"""Every file of the bad-CSV corpus uploaded on Home, one after another, in one browser session.

Each upload must end without an exception in either the health check or a plain error (the same words the
library and the CLI use), and the dataset the user had selected before must stay selected. The session is
shared by all cases on purpose: dozens of bad uploads in a row must not lose anything either.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import FIXTURES, ROOT
from pvf_core.samples import SAMPLE_NAME
from test_bad_csv import EXPECTED, Fails

BAD = FIXTURES / "bad_csv"
TIMEOUT = 120
HEADLINES = ("**This file cannot be used.** ", "**These columns cannot be used.** ",
             "**This data cannot be used yet.** ")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One workspace for the whole module (overrides the per-test one): the uploads share one session."""
    home = tmp_path_factory.mktemp("corpus-pvf-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PVF_HOME", str(home))
        patch.chdir(ROOT)
        yield home


@pytest.fixture(scope="module")
def session(workspace) -> AppTest:
    """A browser session that selected the sample dataset, then chose to upload a file."""
    at = run(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT))
    run(at.button(key="home_use").click())
    assert selected(at).startswith(f"Selected: **{SAMPLE_NAME}**")
    run(at.radio(key="home_source").set_value("Upload a CSV"))
    return at


def selected(at: AppTest) -> str:
    return next((s for s in texts(at.success) if s.startswith("Selected: ")), "")


def test_the_corpus_is_big_enough():
    assert len(EXPECTED) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_upload(session, name):
    at = run(session.file_uploader(key="home_upload").set_value((name, (BAD / name).read_bytes(), "text/csv")))
    errors = texts(at.error)
    expected = EXPECTED[name]
    if isinstance(expected, Fails):
        assert len(errors) == 1, errors
        assert errors[0].startswith(HEADLINES) and expected.phrase in errors[0], errors
        assert not at.metric  # nothing half-checked is shown
    else:
        assert "3. Health check" in texts(at.header)
        assert int(next(m.value for m in at.metric if m.label == "Rows").replace(",", "")) == expected.rows
    for message in errors:
        assert "Traceback" not in message and "Exception" not in message and len(message) < 600
    # Whatever happened, the dataset selected before is still selected, and the link still names it.
    assert selected(at).startswith(f"Selected: **{SAMPLE_NAME}**"), name
    assert at.query_params.get("dataset") == "1"


def test_after_the_whole_corpus_the_session_still_works(session):
    at = run(session.radio(key="home_source").set_value("Sample: support tickets"))
    assert int(next(m.value for m in at.metric if m.label == "Rows")) == 480
    run(at.switch_page("pages/compare.py"))
    assert any(c.startswith(f"Dataset: **{SAMPLE_NAME}**") for c in texts(at.caption))
