"""The corpus of bad, awkward and hostile CSV files: each one parses as expected or fails in plain words.

Every file in tests/fixtures/bad_csv/ (written by tests/fixtures/make_bad_csvs.py) has a row in EXPECTED.
Each case runs through the library (read_csv + suggest_mapping + labeled_frame + make_splits + health
check) and through ``inspect`` in-process; a representative subset also runs as a real
``python -m pvf_core inspect`` subprocess (exit 0 with one JSON object, or exit 2 with one plain line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import FIXTURES, ROOT
from pvf_core.cli import cli
from pvf_core.data import Limits, health_check, labeled_frame, make_splits, mapping_notes, read_csv, suggest_mapping
from pvf_core.errors import DataError

BAD = FIXTURES / "bad_csv"
TEXT_LABEL = ["text", "label"]


@dataclass
class Parses:
    rows: int
    columns: list[str] = field(default_factory=lambda: TEXT_LABEL)
    task: str = "classification"
    code: str | None = None  # a finding that must be reported
    not_code: str | None = None  # a finding that must not be reported
    contains: str | None = None  # a text the first rows must hold, verbatim
    delimiter: str | None = None


@dataclass
class Fails:
    phrase: str  # part of the DataError's plain message


EXPECTED: dict[str, Parses | Fails] = {
    # encodings
    "utf8_bom.csv": Parses(40, not_code="encoding"),
    "utf16_le_bom.csv": Parses(40, code="encoding"),
    "utf16_be_bom.csv": Parses(40, code="encoding"),
    "utf16_le_no_bom.csv": Parses(40, code="encoding"),
    "cp1252.csv": Parses(40, code="encoding", contains="Le café coûte 3 € “très cher” l’été 0"),
    "latin1.csv": Parses(40, code="encoding", contains="Señor Müller bought a crème brûlée for ½ price"),
    "cp1252_header_utf8_body.csv": Parses(40, ["Texte", "Catégorie"], code="encoding", contains="Un café très noir"),
    "non_latin_scripts.csv": Parses(40, not_code="near_duplicates", contains="你好世界"),
    "emoji_only_texts.csv": Parses(40, code="empty_texts", contains="😀"),
    # delimiters
    "semicolon.csv": Parses(40, delimiter=";", contains="really, at 3,50 €"),
    "tab.csv": Parses(40, delimiter="\t"),
    "pipe.csv": Parses(40, delimiter="|"),
    "excel_sep_line.csv": Parses(40, delimiter=";", contains="on day 1, ok"),
    "trailing_delimiters.csv": Parses(40),
    # shape
    "ragged_short_rows.csv": Parses(32, code="missing_values"),
    "ragged_long_rows.csv": Parses(36, code="ragged_rows"),
    "all_rows_too_long.csv": Fails("Every data row of 'all_rows_too_long.csv' has more cells than its header"),
    "empty.csv": Fails("'empty.csv' is empty"),
    "whitespace_only.csv": Fails("'whitespace_only.csv' is empty"),
    "whitespace_only_utf16.csv": Fails("'whitespace_only_utf16.csv' is empty"),
    "header_only.csv": Fails("has a header but no data rows"),
    "header_and_blank_lines.csv": Fails("has a header but no data rows"),
    "all_rows_empty.csv": Fails("every data row is empty"),
    "one_column.csv": Fails("has only one column ('text')"),
    "one_data_row.csv": Fails("There is only 1 row: too few to hold any out for testing"),
    "duplicate_headers.csv": Parses(40, ["text", "text_2", "label"]),
    "empty_header_names.csv": Parses(40, ["column_1", "text", "column_3"]),
    "empty_label_column.csv": Fails("No row has both a 'text' and a 'label' value"),
    "blank_lines_between_rows.csv": Parses(40),
    "many_columns.csv": Parses(40, [f"feature_{c}" for c in range(298)] + TEXT_LABEL),
    "mixed_line_endings.csv": Parses(40),
    "windows_crlf.csv": Parses(40),
    "no_header_row.csv": Parses(39, ["The parcel arrived late on day 1", "bad"], code="no_header"),
    "repeated_header_rows.csv": Parses(50, code="repeated_header", not_code="no_header"),
    # quoting
    "quoted_newlines.csv": Parses(40, contains='on day 1,\nsecond line "quoted"'),
    "all_fields_quoted.csv": Parses(40),
    "unbalanced_quote.csv": Fails('has a quote (") on line 7 that is never closed'),
    # content
    "one_class_only.csv": Parses(40, code="single_class"),
    "thousands_of_classes.csv": Parses(4000, task="text-to-text"),
    "numeric_texts.csv": Parses(40, code="numeric_texts"),
    "numbers_as_labels.csv": Parses(40, not_code="numeric_texts"),
    "formula_cells.csv": Parses(40, contains="=cmd|' /C calc'!A0 0"),
    "html_script_tags.csv": Parses(40, contains="<script>alert(0)</script><b>The parcel"),
    "control_characters.csv": Parses(40, code="control_characters", contains="day 1[31m red[0m"),
    "stray_nul_byte.csv": Parses(40, code="control_characters", contains="on day20"),
    "big_cell.csv": Fails("has a cell of 119,999 characters; the limit is 100,000"),
    "duplicated_texts.csv": Parses(60, code="duplicates", not_code="leakage"),
    # not a CSV at all
    "png_renamed.csv": Fails("does not look like a CSV file: it contains a PNG image"),
    "zip_renamed.csv": Fails("it contains a ZIP archive (an Excel .xlsx workbook is one)"),
    "pdf_renamed.csv": Fails("it contains a PDF document"),
    "random_bytes.csv": Fails("does not look like a CSV file: it contains binary data"),
}

# Run as real subprocesses too: a mix of parses and fails, encodings and structure.
CLI_SUBSET = ["utf16_le_bom.csv", "cp1252.csv", "semicolon.csv", "thousands_of_classes.csv", "png_renamed.csv",
              "empty.csv", "unbalanced_quote.csv", "one_column.csv"]


def run_library(path: Path | bytes, limits: Limits = Limits(), name: str | None = None):
    """The whole data path the app and the CLI take; returns the table, mapping, frame and finding codes."""
    table = read_csv(path, limits=limits, name=name)
    mapping = suggest_mapping(table)
    frame = labeled_frame(table, mapping)
    splits = make_splits(frame, mapping.task)
    findings = table.notes + mapping_notes(table, mapping) + health_check(splits)
    return table, mapping, frame, {w.code for w in findings}


def test_every_file_has_an_expectation_and_the_corpus_is_big_enough():
    on_disk = {p.name for p in BAD.glob("*.csv")}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 32


def test_the_committed_files_match_the_generator():
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_bad_csvs
    finally:
        sys.path.remove(str(FIXTURES))
    generated = make_bad_csvs.cases()
    for name, data in generated.items():
        assert (BAD / name).read_bytes() == data, f"{name} is stale: run tests/fixtures/make_bad_csvs.py"
        assert len(data) < 200_000, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_library_path(name):
    expected = EXPECTED[name]
    if isinstance(expected, Fails):
        with pytest.raises(DataError) as caught:
            run_library(BAD / name)
        assert expected.phrase in str(caught.value)
        assert "\n" not in str(caught.value)
        assert "Traceback" not in str(caught.value)
        return
    table, mapping, frame, codes = run_library(BAD / name)
    assert len(frame) == expected.rows
    assert table.columns == expected.columns
    assert mapping.task == expected.task
    if expected.code:
        assert expected.code in codes
    if expected.not_code:
        assert expected.not_code not in codes
    if expected.contains:
        assert any(expected.contains in text for text in frame["text"])
    if expected.delimiter:
        assert table.delimiter == expected.delimiter
    for column in table.columns:  # no invisible characters survive reading
        assert not table.frame[column].str.contains(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufeff]").any()


def test_megabyte_cell_is_refused():
    raw = b"text,label\nshort,a\n\"" + b"x" * 1_200_000 + b"\",b\n"
    with pytest.raises(DataError, match="has a cell of 1,200,000 characters; the limit is 100,000"):
        run_library(raw, name="huge.csv")
    with pytest.raises(DataError, match="has a cell of 1,200,000 characters; the limit is 5,000"):
        run_library(raw, Limits(max_cell_chars=5000), name="huge.csv")


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"text,label\n" + b"some words here,a\n" * 20_000)  # 360 KB
    with pytest.raises(DataError, match=r"The file is 360\.0 KB; the limit is 100\.0 KB"):
        run_library(path, Limits(max_bytes=100_000))
    with pytest.raises(DataError, match=r"20,000 rows; the limit is 1,000"):
        run_library(path, Limits(max_rows=1000))


def test_directory_is_refused(tmp_path):
    with pytest.raises(DataError, match="is a folder, not a CSV file"):
        read_csv(tmp_path)


# -- the CLI ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def check_cli_result(name: str, exit_code: int, stdout: str, stderr: str) -> None:
    expected = EXPECTED[name]
    assert "Traceback" not in stderr
    if isinstance(expected, Fails):
        assert exit_code == 2, (stdout, stderr)
        assert stdout == ""
        lines = stderr.strip("\n").split("\n")
        assert len(lines) == 1, stderr
        assert lines[0].startswith("Error: ") and expected.phrase in lines[0]
        return
    assert exit_code == 0, stderr
    result = json.loads(stdout)
    assert (result["rows"], result["columns"], result["task"]) == (expected.rows, expected.columns, expected.task)
    assert all(set(w) >= {"code", "message"} for w in result["warnings"])
    codes = {w["code"] for w in result["warnings"]}
    if expected.code:
        assert expected.code in codes
    assert ("labels" in result) == (expected.task == "classification")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_in_process(name, runner, tiny_model_dir):
    result = runner.invoke(cli, ["inspect", str(BAD / name), "--json", "--model", str(tiny_model_dir)])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    check_cli_result(name, result.exit_code, result.stdout, result.stderr)


def test_cli_subprocesses(tiny_model_dir, workspace):
    """Real processes (started together to save time): JSON on stdout or one line on stderr, never a traceback."""
    env = {**os.environ, "PVF_HOME": str(workspace)}
    env.pop("PVF_RAISE_ERRORS", None)
    processes = {name: subprocess.Popen(
        [sys.executable, "-m", "pvf_core", "inspect", str(BAD / name), "--json", "--model", str(tiny_model_dir)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in CLI_SUBSET}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        check_cli_result(name, process.returncode, stdout, stderr)
