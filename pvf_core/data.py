"""Turn a real-world CSV into clean, checked train / validation / test splits.

    read_csv(path_or_bytes)           -> Table        (encoding, delimiter, ragged rows, limits)
    suggest_mapping(table)            -> ColumnMapping (which column is the text, which the answer; task)
    detect_task(column)               -> (task, the rule that decided, in plain words)
    labeled_frame(table, mapping)     -> DataFrame with columns ``text`` and ``label``
    mapping_notes(table, mapping)     -> [HealthWarning] about rows the mapping leaves out
    make_splits(frame, task, ...)     -> Splits        (stratified for classification, seeded)
    health_check(splits, task, ...)   -> [HealthWarning]

For text-to-text tasks the ``text`` column holds the input and ``label`` the expected output, so the
rest of the code handles both tasks with one frame shape.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import pandas as pd

from .errors import DataError
from .metrics import IMBALANCE_RATIO

Task = Literal["classification", "text-to-text"]
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}

TEXT_HINTS = ("text", "sentence", "review", "message", "content", "body", "document", "comment", "tweet",
              "question", "query", "utterance", "description", "title", "input", "source", "src", "prompt")
LABEL_HINTS = ("label", "labels", "class", "category", "target", "sentiment", "intent", "topic", "tag",
               "y", "answer", "output", "gold")
OUTPUT_HINTS = ("output", "target", "tgt", "summary", "answer", "response", "correction", "translation",
                "reference", "completion")
MAX_LABELS = 500          # more distinct answers than this and the task is treated as text-to-text
MAX_LABEL_CHARS = 40      # answers longer than this on average are free text, not labels
SMALL_LABEL_SET = 20      # up to this many distinct answers, repeating on average is enough
MIN_REPEATED_SHARE = 0.5  # above it, most distinct answers must appear at least twice


@dataclass(frozen=True)
class Limits:
    """What an uploaded file may be; the demo mode lowers these."""

    max_bytes: int = 50 * 1024 * 1024
    max_rows: int = 200_000
    max_cell_chars: int = 100_000


@dataclass
class HealthWarning:
    """One finding about the data, in plain words, with the numbers behind it."""

    code: str
    message: str
    level: Literal["info", "warning", "error"] = "warning"
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Table:
    """A parsed CSV: every cell a string, plus what was done to read it."""

    frame: pd.DataFrame
    name: str
    encoding: str
    delimiter: str
    content_hash: str
    dropped_empty_rows: int = 0
    skipped_bad_rows: int = 0
    removed_control_chars: int = 0
    repeated_header_rows: int = 0
    notes: list[HealthWarning] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class ColumnMapping:
    """Which column is the model's input and which the answer it should give."""

    task: Task
    text_column: str
    label_column: str

    def check(self, table: Table) -> None:
        for role, column in (("text", self.text_column), ("answer", self.label_column)):
            if column not in table.columns:
                raise DataError(f"The {role} column '{column}' is not in the file.",
                                f"Columns found: {', '.join(table.columns)}.")
        if self.text_column == self.label_column:
            raise DataError("The text column and the answer column must be different columns.")
        if self.task not in ("classification", "text-to-text"):
            raise DataError(f"Unknown task '{self.task}'; use classification or text-to-text.")


@dataclass(frozen=True)
class SplitSettings:
    """How a dataset is cut into train / validation / test."""

    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    seed: int = 0


@dataclass
class Splits:
    """Train, validation and test frames with columns ``text`` and ``label``."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    task: Task

    @property
    def labels(self) -> list[str]:
        """The label set, sorted, for classification (empty for text-to-text)."""
        if self.task != "classification":
            return []
        return sorted(set(self.train["label"]) | set(self.validation["label"]) | set(self.test["label"]))

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


# -- reading --------------------------------------------------------------------------------------------

def read_csv(source: str | Path | bytes, *, name: str | None = None, limits: Limits = Limits(),
             min_columns: int = 2) -> Table:
    """Read a CSV from a path or raw bytes; detect encoding and delimiter; refuse what cannot be used.

    ``min_columns=1`` accepts a file of texts alone (rows to be answered, not learned from)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        if path.is_dir():
            raise DataError(f"{path} is a folder, not a CSV file.")
        if not path.is_file():
            raise DataError(f"There is no file at {path}.")
        if path.stat().st_size > limits.max_bytes:
            raise DataError(_too_big(path.stat().st_size, limits), "Upload a smaller sample of the data.")
        raw = path.read_bytes()
    else:
        raw, name = bytes(source), name or "upload.csv"
    if len(raw) > limits.max_bytes:
        raise DataError(_too_big(len(raw), limits), "Upload a smaller sample of the data.")
    empty = DataError(f"'{name}' is empty.", "Choose a CSV file with a header row and some data rows.")
    if not raw.strip():
        raise empty
    text, encoding = decode(raw, name)
    text, removed = _CONTROL.subn("", text)  # stray control characters: invisible, and they confuse tokenizers
    if not text.strip():
        raise empty
    text, delimiter = _excel_separator_line(text)
    delimiter = delimiter or sniff_delimiter(text)
    rows, skipped = _parse_rows(text, delimiter, name, limits)
    frame, dropped, repeated = _to_frame(rows, name, limits, min_columns)
    table = Table(frame=frame, name=name, encoding=encoding, delimiter=delimiter,
                  content_hash=hashlib.sha256(raw).hexdigest()[:16], dropped_empty_rows=dropped,
                  skipped_bad_rows=skipped, removed_control_chars=removed, repeated_header_rows=repeated)
    table.notes = _reading_notes(table)
    return table


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _excel_separator_line(text: str) -> tuple[str, str | None]:
    """Excel may write ``sep=;`` as the first line to name the delimiter: use it and drop the line."""
    match = re.match(r"[ \t]*sep=(.)[ \t]*(\r\n|\r|\n)", text, flags=re.IGNORECASE)
    if match:
        return text[match.end():], match.group(1)
    return text, None


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 row``, ``2 rows``: a count with its noun."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def _size(n_bytes: int) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= factor:
            return f"{n_bytes / factor:.1f} {unit}"
    return plural(n_bytes, "byte")


def _too_big(size: int, limits: Limits) -> str:
    return f"The file is {_size(size)}; the limit is {_size(limits.max_bytes)}."


def decode(raw: bytes, name: str = "the file") -> tuple[str, str]:
    """Decode bytes as UTF-8 (with or without BOM), UTF-16 or cp1252/latin-1; refuse binary data.

    A file that is mostly UTF-8 with a few cp1252 bytes (a header typed in Excel, a file cut in the middle
    of a character) is read as UTF-8 with those bytes taken as cp1252, reported as ``utf-8+cp1252``.
    """
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8):].decode("utf-8", errors=_CP1252_FALLBACK), "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace"), "utf-16"
    head = raw[:4096]
    kind = _binary_kind(head)
    if kind is None and head.count(b"\x00") > len(head) // 4:
        # UTF-16 without a BOM has a zero byte in every other position for ASCII text.
        for codec, zeros in (("utf-16-le", head[1::2]), ("utf-16-be", head[0::2])):
            if zeros.count(0) > 0.9 * len(zeros):
                return raw.decode(codec, errors="replace"), codec
    if kind is None and _looks_binary(head):
        kind = "binary data"
    if kind:
        raise DataError(f"'{name}' does not look like a CSV file: it contains {kind}.",
                        "Export the data as CSV (comma- or semicolon-separated text) and upload that.")
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if _UTF8_MULTIBYTE.search(raw):  # real UTF-8 characters next to a few stray bytes
        return raw.decode("utf-8", errors=_CP1252_FALLBACK), "utf-8+cp1252"
    try:
        return raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


# Byte patterns of a UTF-8 encoded character of two to four bytes.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_CP1252_FALLBACK = "pvf-cp1252-fallback"


def _cp1252_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    bad = error.object[error.start:error.end]
    return bad.decode("cp1252", errors="replace"), error.end


codecs.register_error(_CP1252_FALLBACK, _cp1252_fallback)

# File signatures of formats people upload by mistake instead of a CSV.
_SIGNATURES = {
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx workbook is one)",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) or Office file",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "gzip-compressed data",
    b"SQLite format 3": "an SQLite database",
    b"PAR1": "a Parquet file",
    b"\x7fELF": "a program",
}


def _binary_kind(head: bytes) -> str | None:
    for signature, kind in _SIGNATURES.items():
        if head.startswith(signature):
            return kind
    return None


def _looks_binary(head: bytes) -> bool:
    """Many zero bytes or control characters: not text (a stray one in a text file is removed later)."""
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    return head.count(b"\x00") > 0.01 * len(head) or control > 0.1 * max(len(head), 1)


def sniff_delimiter(text: str) -> str:
    """The delimiter among , ; tab | that splits the first lines into the most consistent columns."""
    sample = text[:65536]
    lines = sample.splitlines()[:50] or [""]
    best, best_score = ",", (-1.0, 0)
    for delimiter in DELIMITERS:
        try:
            counts = [len(r) for r in csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        header = counts[0]
        consistency = sum(c == header for c in counts) / len(counts)
        score = (consistency, header)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _parse_rows(text: str, delimiter: str, name: str, limits: Limits) -> tuple[list[list[str]], int]:
    csv.field_size_limit(max(limits.max_bytes, 131072))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, last_start = [], 1
    try:
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if row:  # csv gives [] for blank lines
                rows.append(row)
                last_start = start
    except csv.Error as error:
        raise DataError(f"'{name}' could not be read as CSV (line {reader.line_num}: {error}).",
                        "Check that quotes are balanced, or save the file again from a spreadsheet program.")
    if not rows:
        raise DataError(f"'{name}' has no rows.")
    if text.count('"') % 2 and any("\n" in cell or "\r" in cell for cell in rows[-1]):
        # An odd number of quotes and a last row spanning lines: a quote opened and never closed swallowed
        # every line after it.
        raise DataError(f"'{name}' has a quote (\") on line {last_start} that is never closed, so every line "
                        "after it would be read as one cell.",
                        "Remove the stray quote or close it, or save the file again from a spreadsheet program.")
    width = len(rows[0])
    kept = [rows[0]]
    skipped = 0
    for row in rows[1:]:
        if len(row) > width and any(cell.strip() for cell in row[width:]):
            skipped += 1  # more cells than header names: we cannot know which column they belong to
            continue
        kept.append((row + [""] * width)[:width])
    if skipped and len(kept) == 1:
        raise DataError(f"Every data row of '{name}' has more cells than its header has names ({width}).",
                        f"If a text contains the separator ({DELIMITER_NAMES[delimiter]}), put the text in double "
                        "quotes, or save the file again from a spreadsheet program.")
    return kept, skipped


def _to_frame(rows: list[list[str]], name: str, limits: Limits,
              min_columns: int = 2) -> tuple[pd.DataFrame, int, int]:
    """The rows as a frame of stripped strings; also how many empty rows and repeated headers were dropped."""
    rows = _drop_unnamed_empty_columns(rows)
    header = _clean_header(rows[0])
    if len(header) < min_columns:
        raise DataError(f"'{name}' has only one column ('{header[0]}').",
                        "PvF Studio needs two columns: the text the model reads and the answer it should give. "
                        "If there are two, separate them with a comma, semicolon, tab or pipe.")
    body = rows[1:]
    if not body:
        raise DataError(f"'{name}' has a header but no data rows.", "Add the rows under the header.")
    if len(body) > limits.max_rows:
        raise DataError(f"'{name}' has {len(body):,} rows; the limit is {limits.max_rows:,}.",
                        "Upload a random sample of the rows.")
    frame = pd.DataFrame(body, columns=header, dtype=str)
    frame = frame.apply(lambda col: col.str.strip())
    empty = (frame == "").all(axis=1)
    repeated = frame.eq(pd.Series(header, index=frame.columns)).all(axis=1)  # files pasted one after another
    frame = frame[~empty & ~repeated].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"'{name}' has a header but every data row is empty.", "Fill in the rows under the header.")
    longest = int(frame.apply(lambda col: col.str.len().max()).max())
    if longest > limits.max_cell_chars:
        raise DataError(f"'{name}' has a cell of {longest:,} characters; the limit is "
                        f"{limits.max_cell_chars:,}.", "Shorten or remove very long cells.")
    return frame, int(empty.sum()), int(repeated.sum())


def _drop_unnamed_empty_columns(rows: list[list[str]]) -> list[list[str]]:
    """Columns without a header name and without a value (from trailing separators) are noise: drop them."""
    keep = [i for i, name in enumerate(rows[0])
            if name.strip() or any(row[i].strip() for row in rows[1:])]
    if len(keep) == len(rows[0]) or not keep:
        return rows
    return [[row[i] for i in keep] for row in rows]


def _clean_header(header: list[str]) -> list[str]:
    names: list[str] = []
    for i, raw in enumerate(header):
        base = re.sub(r"\s+", " ", raw.replace("\ufeff", "")).strip() or f"column_{i + 1}"
        candidate, n = base, 2
        while candidate in names:
            candidate, n = f"{base}_{n}", n + 1
        names.append(candidate)
    return names


def _reading_notes(table: Table) -> list[HealthWarning]:
    notes = []
    if table.dropped_empty_rows:
        notes.append(HealthWarning("empty_rows", f"{plural(table.dropped_empty_rows, 'empty row')} "
                                   f"{'was' if table.dropped_empty_rows == 1 else 'were'} dropped.", "info",
                                   {"rows": table.dropped_empty_rows}))
    if table.skipped_bad_rows:
        notes.append(HealthWarning(
            "ragged_rows", f"{plural(table.skipped_bad_rows, 'row')} had more cells than the header and "
            f"{'was' if table.skipped_bad_rows == 1 else 'were'} skipped.",
            "warning", {"rows": table.skipped_bad_rows}))
    if table.repeated_header_rows:
        notes.append(HealthWarning(
            "repeated_header", f"{plural(table.repeated_header_rows, 'row')} repeated the header and "
            f"{'was' if table.repeated_header_rows == 1 else 'were'} dropped.", "info",
            {"rows": table.repeated_header_rows}))
    suspects = [c for c in table.columns if table.frame[c].nunique() <= MAX_LABELS and (table.frame[c] == c).any()]
    if suspects:
        notes.append(HealthWarning(
            "no_header", f"The first row looks like data, not column names: '{suspects[0]}' is also a value in "
            "its column. Add a header row (for example text,label) so that row is not lost.", "warning",
            {"columns": suspects}))
    if table.removed_control_chars:
        notes.append(HealthWarning(
            "control_characters", f"{plural(table.removed_control_chars, 'invisible control character')} "
            f"{'was' if table.removed_control_chars == 1 else 'were'} removed.", "info",
            {"characters": table.removed_control_chars}))
    if table.encoding == "utf-8+cp1252":
        notes.append(HealthWarning("encoding", "The file is UTF-8 except for a few bytes, which were read as "
                                   "Windows-1252 (cp1252): check accents and quotes in the preview.", "warning",
                                   {"encoding": table.encoding}))
    elif table.encoding not in ("utf-8", "utf-8-sig"):
        notes.append(HealthWarning("encoding", f"The file was read as {table.encoding}, not UTF-8.", "info",
                                   {"encoding": table.encoding}))
    return notes


# -- column mapping -------------------------------------------------------------------------------------

def suggest_mapping(table: Table, *, text_column: str | None = None, label_column: str | None = None,
                    task: Task | None = None) -> ColumnMapping:
    """Guess the text and answer columns and the task; any argument given wins over the guess."""
    stats = {c: _column_stats(table.frame[c]) for c in table.columns}
    label = label_column or _pick(stats, LABEL_HINTS + OUTPUT_HINTS, exclude={text_column},
                                  prefer=lambda s: (-s["unique"], -s["mean_len"]))
    text = text_column or _pick(stats, TEXT_HINTS, exclude={label},
                                prefer=lambda s: (s["mean_len"], s["unique"]))
    if task is None:
        task = detect_task(table.frame[label])[0]
    mapping = ColumnMapping(task=task, text_column=text, label_column=label)
    mapping.check(table)
    return mapping


def _column_stats(column: pd.Series) -> dict:
    filled = column[column != ""]
    return {"unique": int(filled.nunique()), "mean_len": float(filled.str.len().mean() or 0.0),
            "filled": len(filled)}


def _pick(stats: dict[str, dict], hints: tuple[str, ...], exclude: set, prefer: Callable) -> str:
    filled = [c for c in stats if c not in exclude and stats[c]["filled"] > 0]
    everything = [c for c in stats if c not in exclude]
    # A column named like the role wins, a filled one first; an empty 'label' column still beats guessing
    # another column (the user then hears that the labels are missing instead of seeing the columns swapped).
    for candidates in (filled, everything):
        lowered = {c.lower().strip(): c for c in candidates}
        for hint in hints:
            if hint in lowered:
                return lowered[hint]
    return max(filled or everything, key=lambda c: prefer(stats[c]))


def detect_task(column: pd.Series) -> tuple[Task, str]:
    """Classification or text-to-text for an answer column, and the rule that decided, in plain words.

    Short answers that repeat are labels, even hundreds of them (intent routing has 77 or 150); answers
    that are long, or that rarely repeat, are free text the model has to write.
    """
    filled = column[column != ""].astype(str)
    counts = filled.value_counts()
    n_rows, n_labels = len(filled), len(counts)
    mean_len = float(filled.str.len().mean()) if n_rows else 0.0
    repeated = float((counts >= 2).mean()) if n_labels else 0.0
    if n_labels > MAX_LABELS:
        return "text-to-text", (f"{n_labels:,} different answers, more than the {MAX_LABELS} labels a "
                                "classifier is offered, so they are treated as free text.")
    if mean_len > MAX_LABEL_CHARS:
        return "text-to-text", (f"The answers are {mean_len:.0f} characters long on average (labels are at most "
                                f"{MAX_LABEL_CHARS}), so they are treated as free text.")
    if n_labels > max(2, n_rows // 2):
        return "text-to-text", (f"{n_labels:,} different answers in {plural(n_rows, 'row')}: most answers "
                                "appear only once, so they are treated as free text.")
    if n_labels > SMALL_LABEL_SET and repeated < MIN_REPEATED_SHARE:
        return "text-to-text", (f"Only {repeated:.0%} of the {n_labels} different answers appear more than once, "
                                "so they are treated as free text.")
    if n_labels <= SMALL_LABEL_SET:  # the rule that decided: few answers, repeating on average
        return "classification", (f"{n_labels} different short answers in {plural(n_rows, 'row')} "
                                  f"({n_rows / max(n_labels, 1):.1f} rows per answer), so each is a label to choose "
                                  "from.")
    return "classification", (f"{n_labels} different short answers that repeat ({repeated:.0%} of them appear at "
                              "least twice), so each is a label to choose from.")


def task_reason(table: Table, mapping: ColumnMapping) -> str:
    """Why the mapping's task applies: the detection rule, or that it was chosen against the detection."""
    detected, reason = detect_task(table.frame[mapping.label_column])
    if detected == mapping.task:
        return reason
    return f"Set to {mapping.task} by you; detection alone would say {detected}: {reason}"


def labeled_frame(table: Table, mapping: ColumnMapping) -> pd.DataFrame:
    """The two mapped columns as ``text`` and ``label``; rows missing either are dropped."""
    mapping.check(table)
    frame = pd.DataFrame({"text": table.frame[mapping.text_column],
                          "label": table.frame[mapping.label_column]})
    frame = frame[(frame["text"] != "") & (frame["label"] != "")].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"No row has both a '{mapping.text_column}' and a '{mapping.label_column}' value.",
                        "Pick other columns, or fill in the empty cells.")
    return frame


def mapping_notes(table: Table, mapping: ColumnMapping) -> list[HealthWarning]:
    """What ``labeled_frame`` leaves out with this mapping: rows without a text or without an answer."""
    no_text = table.frame[mapping.text_column] == ""
    no_answer = table.frame[mapping.label_column] == ""
    missing = int((no_text | no_answer).sum())
    if not missing:
        return []
    return [HealthWarning(
        "missing_values", f"{plural(missing, 'row has', 'rows have')} no text or no answer and "
        f"{'is' if missing == 1 else 'are'} left out.", "warning",
        {"rows": missing, "no_text": int(no_text.sum()), "no_answer": int(no_answer.sum())})]


# -- splits ---------------------------------------------------------------------------------------------

def make_splits(frame: pd.DataFrame, task: Task, settings: SplitSettings = SplitSettings(),
                test_frame: pd.DataFrame | None = None) -> Splits:
    """Cut ``frame`` into train / validation / test, stratified by label for classification.

    Rows whose texts match (after ``normalise_text``) stay on the same side of every cut, so the split
    itself never leaks a test text into training. With ``test_frame`` (a test file the user gave) only the
    validation part is carved from ``frame``.
    """
    from sklearn.model_selection import train_test_split

    def cut(part: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        part = part.reset_index(drop=True)
        keys = part["text"].map(normalise_text)
        groups = part[~keys.duplicated()]  # one row per distinct text, carrying its first label
        n_out = int(round(len(groups) * fraction))
        if n_out < 1 or len(groups) - n_out < 1:
            return part.reset_index(drop=True), part.iloc[0:0]
        stratify = None
        if task == "classification":
            strata = _strata(groups["label"])
            n_classes = strata.nunique()
            if n_classes > 1 and n_classes <= n_out <= len(groups) - n_classes:
                stratify = strata
        keep, out = train_test_split(groups, test_size=n_out, random_state=settings.seed, stratify=stratify)

        def gather(chosen: pd.DataFrame) -> pd.DataFrame:
            """Every row of the chosen groups, in the shuffled order of the groups."""
            rank = {key: i for i, key in enumerate(keys[chosen.index])}
            rows = part[keys.isin(list(rank))]
            order = keys[rows.index].map(rank).to_numpy()
            return rows.iloc[order.argsort(kind="stable")].reset_index(drop=True)

        return gather(keep), gather(out)

    if test_frame is None:
        rest, test = cut(frame, settings.test_fraction)
    else:
        rest, test = frame, test_frame.reset_index(drop=True)
    validation_share = settings.validation_fraction / max(1e-9, 1 - (0 if test_frame is not None
                                                                      else settings.test_fraction))
    train, validation = cut(rest, validation_share)
    if len(test) == 0:
        distinct = frame["text"].map(normalise_text).nunique()
        counted = plural(len(frame), "row") + ("" if distinct == len(frame) else
                                               f" with {plural(distinct, 'different text')}")
        raise DataError(f"There {'is' if len(frame) == 1 else 'are'} only {counted}: too few to hold any out "
                        "for testing.", "Add more rows, or upload a separate test file.")
    return Splits(train=train, validation=validation, test=test, task=task)


def _strata(labels: pd.Series) -> pd.Series:
    """Labels to stratify by: labels seen once share one stratum (a stratum needs two rows to be cut), so
    a few rare labels do not turn stratification off for all the others."""
    counts = labels.value_counts()
    once = labels.map(counts) < 2
    strata = labels.astype(str).where(~once, "\x00rare")
    if once.sum() == 1:  # a lone rare row cannot form a stratum either: it joins the most common label
        strata = strata.where(~once, str(counts.index[0]))
    return strata


# -- health check ---------------------------------------------------------------------------------------

def health_check(splits: Splits, *, count_tokens: Callable[[list[str]], list[int]] | None = None,
                 context_length: int | None = None) -> list[HealthWarning]:
    """Structured findings about the data, worst first: too small, unbalanced, duplicated, leaking..."""
    everything = pd.concat([splits.train, splits.validation, splits.test], ignore_index=True)
    found: list[HealthWarning] = []
    found += _size_findings(everything, splits)
    if splits.task == "classification":
        found += _label_findings(everything, splits)
    found += _duplicate_findings(everything, splits)
    found += _text_findings(everything)
    if count_tokens and context_length:
        found += _length_findings(everything, count_tokens, context_length)
    return worst_first(found)


def worst_first(findings: list[HealthWarning]) -> list[HealthWarning]:
    """Errors, then warnings, then notes; the order within a level is kept."""
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda w: order[w.level])


MIN_ROWS = 50
MIN_PER_CLASS = 8


def _size_findings(frame: pd.DataFrame, splits: Splits) -> list[HealthWarning]:
    n = len(frame)
    if n < MIN_ROWS:
        return [HealthWarning("too_few_rows", f"Only {plural(n, 'row')}. Scores on so few test rows are very "
                              "noisy, and fine-tuning needs more examples; aim for a few hundred.", "warning",
                              {"rows": n, "recommended": MIN_ROWS})]
    if len(splits.test) < 30:
        return [HealthWarning("small_test_set", f"The test split has only {plural(len(splits.test), 'row')}, so "
                              "scores will move by many points from row to row.", "warning",
                              {"test_rows": len(splits.test)})]
    return []


def _label_findings(frame: pd.DataFrame, splits: Splits) -> list[HealthWarning]:
    counts = frame["label"].value_counts()
    n_classes = len(counts)
    if n_classes == 1:
        return [HealthWarning("single_class", f"Every row has the same answer ('{counts.index[0]}'): there is "
                              "nothing to learn or to predict.", "error", {"classes": 1})]
    found = []
    if n_classes > max(2, len(frame) // MIN_PER_CLASS):
        found.append(HealthWarning(
            "too_many_classes", f"{n_classes} different answers for {plural(len(frame), 'row')}: most answers have "
            "too few examples. Add rows for the rare answers or merge them.", "warning",
            {"classes": n_classes, "rows": len(frame)}))
    rare = counts[counts < MIN_PER_CLASS]
    if len(rare) and n_classes <= MAX_LABELS:
        found.append(HealthWarning(
            "too_few_per_class", f"{plural(len(rare), 'answer has', 'answers have')} fewer than {MIN_PER_CLASS} rows "
            f"({', '.join(f'{k}: {v}' for k, v in rare.head(5).items())}). The model can hardly learn them and the "
            "test split may not contain them.", "warning", {"classes": {str(k): int(v) for k, v in rare.items()}}))
    ratio = counts.iloc[0] / max(counts.iloc[-1], 1)
    if ratio >= IMBALANCE_RATIO:
        share = counts.iloc[0] / len(frame)
        found.append(HealthWarning(
            "class_imbalance", f"'{counts.index[0]}' is {ratio:.0f}× as common as '{counts.index[-1]}'. A model that "
            f"always answers '{counts.index[0]}' is already right {share:.0%} of the time, so look at macro-F1, "
            "not only accuracy.", "warning", {"ratio": round(float(ratio), 2), "majority_share": round(share, 3)}))
    found += _many_label_findings(counts, splits)
    conflicts = frame.groupby("text")["label"].nunique()
    conflicting = int((conflicts > 1).sum())
    if conflicting:
        found.append(HealthWarning(
            "conflicting_labels", f"{plural(conflicting, 'text appears', 'texts appear')} with different answers. "
            "No model can get all of them right; check these rows.", "warning", {"texts": conflicting}))
    return found


RARE_LABEL_ROWS = 2  # labels with this many rows or fewer are named one by one


def _many_label_findings(counts: pd.Series, splits: Splits) -> list[HealthWarning]:
    """Rare labels, labels the test split lacks, and label names that differ only in case or punctuation."""
    found = []
    rare = counts[counts <= RARE_LABEL_ROWS].sort_values()
    if len(rare):
        found.append(HealthWarning(
            "rare_labels", f"{plural(len(rare), 'label has', 'labels have')} only one or two rows "
            f"({_some(f'{k}: {v}' for k, v in rare.items())}). The model can hardly learn them, and a score on "
            "one or two test rows says little.", "warning",
            {"labels": {str(k): int(v) for k, v in rare.items()}, "count": len(rare)}))
    if len(splits.test):
        seen = set(splits.train["label"]) | set(splits.validation["label"])
        missing = sorted(seen - set(splits.test["label"]), key=lambda k: (-counts.get(k, 0), str(k)))
        if missing:
            found.append(HealthWarning(
                "labels_missing_from_test", f"{plural(len(missing), 'label does', 'labels do')} not appear in the "
                f"test split ({_some(missing)}), so how well they are recognised is not measured.", "info",
                {"labels": [str(k) for k in missing], "count": len(missing), "test_labels":
                 int(splits.test["label"].nunique())}))
    groups: dict[str, list[str]] = {}
    for label in counts.index:
        groups.setdefault(normalise_text(str(label)), []).append(str(label))
    alike = [sorted(names) for names in groups.values() if len(names) > 1]
    if alike:
        pairs = "; ".join(" and ".join(f"'{n}'" for n in names) for names in alike[:5])
        found.append(HealthWarning(
            "near_duplicate_labels", f"{plural(len(alike), 'group of labels differs', 'groups of labels differ')} "
            f"only in case, spaces or punctuation ({pairs}{'; …' if len(alike) > 5 else ''}). If they mean the same, "
            "write them the same way; otherwise the model must tell apart answers that look identical.",
            "warning", {"groups": alike, "count": len(alike)}))
    return found


def _some(items, limit: int = 5) -> str:
    """The first few items, comma-separated, with '…' and how many more."""
    items = [str(i) for i in items]
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f", … and {more} more" if more > 0 else "")


def normalise_text(text: str) -> str:
    """Lower-case letters and digits only: two texts that differ only in case, spacing or punctuation match.

    Letters of every script count (Cyrillic, CJK, accents); a text with no letter or digit at all (emoji,
    punctuation) is kept as it is, so such texts are not all "the same".
    """
    normalised = re.sub(r"[\W_]+", " ", text.casefold()).strip()
    return normalised or text.strip()


def _duplicate_findings(frame: pd.DataFrame, splits: Splits) -> list[HealthWarning]:
    found = []
    exact = int(frame.duplicated(["text"]).sum())
    if exact:
        found.append(HealthWarning("duplicates", f"{plural(exact, 'row repeats', 'rows repeat')} a text that "
                                   "appears earlier.", "info", {"rows": exact}))
    normalised = frame["text"].map(normalise_text)
    near = int(normalised.duplicated().sum()) - exact
    if near > 0:
        found.append(HealthWarning(
            "near_duplicates", f"{plural(near, 'more row differs', 'more rows differ')} from another row only in "
            "case, spacing or punctuation.", "info", {"rows": near}))
    train_texts = set(splits.train["text"].map(normalise_text)) | set(splits.validation["text"].map(normalise_text))
    leaked = int(splits.test["text"].map(normalise_text).isin(train_texts).sum())
    if leaked:
        found.append(HealthWarning(
            "leakage", f"{plural(leaked, 'test row also appears', 'test rows also appear')} in the training data. "
            "Scores on them flatter the model, fine-tuning most of all.", "warning",
            {"rows": leaked, "test_rows": len(splits.test)}))
    return found


def _text_findings(frame: pd.DataFrame) -> list[HealthWarning]:
    found = []
    numeric = int(frame["text"].str.fullmatch(r"[\d\s.,:;+\-/%$€£]+").sum())
    if numeric:
        found.append(HealthWarning("numeric_texts", f"{plural(numeric, 'text contains', 'texts contain')} only "
                                   "numbers or symbols: a language model has little to read there.", "warning",
                                   {"rows": numeric}))
    very_short = int((frame["text"].str.len() < 3).sum())
    if very_short:
        found.append(HealthWarning("empty_texts", f"{plural(very_short, 'text is', 'texts are')} shorter than 3 "
                                   "characters.", "warning", {"rows": very_short}))
    return found


def _length_findings(frame: pd.DataFrame, count_tokens: Callable[[list[str]], list[int]],
                     context_length: int) -> list[HealthWarning]:
    lengths = pd.Series(count_tokens(list(frame["text"])))
    budget = context_length // 2
    too_long = int((lengths > budget).sum())
    numbers = {"rows": too_long, "max_tokens": int(lengths.max()), "median_tokens": int(lengths.median()),
               "context_length": context_length}
    if too_long:
        return [HealthWarning("too_long", f"{plural(too_long, 'text is', 'texts are')} longer than {budget} tokens "
                              f"(half the model's context of {context_length}); they will be cut, and few-shot "
                              "examples will not fit.",
                              "warning", numbers)]
    return [HealthWarning("lengths", f"Texts are {numbers['median_tokens']} tokens long in the median, "
                          f"{numbers['max_tokens']} at most: they fit the model's context.", "info", numbers)]


# -- registered datasets --------------------------------------------------------------------------------

@dataclass
class Dataset:
    """A registered dataset: its splits and where it came from."""

    id: int
    name: str
    task: Task
    mapping: ColumnMapping
    split: SplitSettings
    splits: Splits
    content_hash: str

    @property
    def labels(self) -> list[str]:
        return self.splits.labels


def register_dataset(table: Table, mapping: ColumnMapping, split: SplitSettings = SplitSettings(), *,
                     test_table: Table | None = None, store=None) -> Dataset:
    """Save the table (and optional test table) in the workspace and the store; return it split.

    Registering the same content with the same mapping and split again returns the existing dataset.
    """
    from .store import Store, workspace_dir

    store = store or Store()
    frame = labeled_frame(table, mapping)
    test_frame = labeled_frame(test_table, mapping) if test_table is not None else None
    splits = make_splits(frame, mapping.task, split, test_frame)
    content_hash = table.content_hash + (f"+{test_table.content_hash}" if test_table is not None else "")
    existing = store.find_dataset(content_hash, asdict(mapping), asdict(split))
    if existing:
        return load_dataset(existing.id, store=store)
    folder = workspace_dir("datasets")
    path = folder / f"{table.content_hash}.csv"
    table.frame.to_csv(path, index=False)
    test_path = None
    if test_table is not None:
        test_path = folder / f"{test_table.content_hash}.csv"
        test_table.frame.to_csv(test_path, index=False)
    dataset_id = store.add_dataset(name=table.name, content_hash=content_hash, path=str(path), task=mapping.task,
                                   mapping=asdict(mapping), split=asdict(split), n_rows=len(frame),
                                   test_path=str(test_path) if test_path else None)
    return Dataset(id=dataset_id, name=table.name, task=mapping.task, mapping=mapping, split=split,
                   splits=splits, content_hash=content_hash)


def load_dataset(dataset_id: int, *, store=None) -> Dataset:
    """A registered dataset, split exactly as when it was registered."""
    from .store import Store

    store = store or Store()
    record = store.get_dataset(dataset_id)
    if record is None:
        raise DataError(f"There is no dataset number {dataset_id} in this workspace.",
                        "Upload the file again or pick the sample dataset.")
    mapping, split = ColumnMapping(**record.mapping), SplitSettings(**record.split)
    table = read_csv(record.path, name=record.name)
    test_frame = labeled_frame(read_csv(record.test_path), mapping) if record.test_path else None
    splits = make_splits(labeled_frame(table, mapping), mapping.task, split, test_frame)
    return Dataset(id=record.id, name=record.name, task=mapping.task, mapping=mapping, split=split, splits=splits,
                   content_hash=record.content_hash)


def load_splits(train_path: str | Path, test_path: str | Path, *, text_column: str | None = None,
                label_column: str | None = None, task: Task | None = None, seed: int = 0,
                validation_fraction: float = 0.1, max_train: int | None = None,
                validation_path: str | Path | None = None) -> tuple[Splits, ColumnMapping]:
    """Splits from a train file and a test file, as the CLI takes them (test rows kept in file order).

    ``max_train`` keeps the first N rows of the train file before the validation rows are carved from them;
    ``validation_path`` gives the validation rows as a file instead (nothing is carved then).
    """
    train_table = read_csv(train_path)
    mapping = suggest_mapping(train_table, text_column=text_column, label_column=label_column, task=task)
    test_table = read_csv(test_path)
    test_mapping = ColumnMapping(mapping.task, mapping.text_column, mapping.label_column)
    test_mapping.check(test_table)
    if validation_path is not None:
        validation_fraction = 0.0
    settings = SplitSettings(test_fraction=0.0, validation_fraction=validation_fraction, seed=seed)
    train_frame = labeled_frame(train_table, mapping)
    if max_train is not None:
        train_frame = train_frame.head(max(int(max_train), 1)).reset_index(drop=True)
    splits = make_splits(train_frame, mapping.task, settings, labeled_frame(test_table, test_mapping))
    if validation_path is not None:
        validation_table = read_csv(validation_path)
        test_mapping.check(validation_table)
        splits.validation = labeled_frame(validation_table, test_mapping)
    return splits, mapping
