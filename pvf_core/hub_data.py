"""Datasets from the Hugging Face hub (by id and split) or a folder saved with ``datasets``' ``save_to_disk``.

    load_hub_table(source, split, config=None, limits)   -> data.Table   (then the same column mapping,
    table_from_dataset(dataset, name, limits)            -> data.Table    limits and health check as a CSV)

A hub dataset arrives typed (label columns as class numbers with names); it becomes the same table of strings
a CSV gives, so everything after reading is shared. CSV files keep their own pandas-free reader in
``data.read_csv``: it detects encodings and delimiters byte by byte, which ``datasets``' CSV loader (pyarrow,
UTF-8 only) does not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from .data import HealthWarning, Limits, Table, plural
from .errors import DataError


def load_hub_table(source: str, split: str = "train", config: str | None = None, *,
                   limits: Limits = Limits()) -> Table:
    """The split of a hub dataset (``source`` = its id) or of a ``save_to_disk`` folder, as a Table.

    ``split`` takes ``datasets``' slices too (``train[:2000]``), the way to stay under the row limit.
    """
    source, split = source.strip(), (split or "train").strip()
    if not source:
        raise DataError("Type a dataset id, for example 'stanfordnlp/sst2'.")
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - pinned in requirements.txt
        raise DataError("The 'datasets' package is not installed.", "Run `make install`.") from error
    folder = Path(source).expanduser()
    try:
        if folder.is_dir():
            loaded = datasets.load_from_disk(str(folder))
            if isinstance(loaded, datasets.DatasetDict):
                base = split.split("[", 1)[0]
                if base not in loaded:
                    raise DataError(f"{folder} has no split '{base}'; it has {', '.join(loaded)}.")
                loaded = loaded[base]
        else:
            from .model_choice import hub_status

            reachable, reason = hub_status()
            if not reachable:
                raise DataError(reason.replace("Hub models", "Hub datasets"))
            loaded = datasets.load_dataset(source, config or None, split=split)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - a wrong id, split or config: say so plainly
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise DataError(f"The dataset '{source}' (split '{split}') could not be loaded ({first}).",
                        "Check the id, the split name and, for datasets with several configurations, the "
                        "configuration.") from error
    name = f"{source}{f' ({config})' if config else ''} [{split}]"
    return table_from_dataset(loaded, name, limits=limits)


def table_from_dataset(dataset: Any, name: str, *, limits: Limits = Limits()) -> Table:
    """A ``datasets.Dataset`` as the table of strings a CSV gives: class numbers become their names."""
    if len(dataset) > limits.max_rows:
        raise DataError(f"'{name}' has {len(dataset):,} rows; the limit is {limits.max_rows:,}.",
                        "Load a slice of the split, for example train[:5000].")
    columns = {}
    for column, feature in dataset.features.items():
        values = dataset[column]
        names = getattr(feature, "names", None)  # a ClassLabel: numbers with names
        if names:
            values = [names[v] if isinstance(v, int) and 0 <= v < len(names) else "" for v in values]
        columns[column] = ["" if v is None else str(v).strip() for v in values]
    frame = pd.DataFrame(columns, dtype=str)
    if frame.shape[1] < 2:
        raise DataError(f"'{name}' has only one column.", "PvF Studio needs a text column and an answer column.")
    empty = (frame == "").all(axis=1)
    frame = frame[~empty].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"'{name}' has no rows.")
    longest = int(frame.apply(lambda col: col.str.len().max()).max())
    if longest > limits.max_cell_chars:
        raise DataError(f"'{name}' has a cell of {longest:,} characters; the limit is "
                        f"{limits.max_cell_chars:,}.", "Choose a dataset of shorter texts.")
    raw = frame.to_csv(index=False).encode("utf-8")
    if len(raw) > limits.max_bytes:
        raise DataError(f"'{name}' is {len(raw) / 2**20:.0f} MB as text; the limit is "
                        f"{limits.max_bytes / 2**20:.0f} MB.", "Load a slice of the split, for example train[:5000].")
    table = Table(frame=frame, name=name, encoding="utf-8", delimiter=",",
                  content_hash=hashlib.sha256(raw).hexdigest()[:16], dropped_empty_rows=int(empty.sum()))
    if table.dropped_empty_rows:
        table.notes = [HealthWarning("empty_rows", f"{plural(table.dropped_empty_rows, 'empty row')} "
                                     f"{'was' if table.dropped_empty_rows == 1 else 'were'} dropped.", "info",
                                     {"rows": table.dropped_empty_rows})]
    return table
