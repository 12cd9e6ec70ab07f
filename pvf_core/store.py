"""The workspace folder and its SQLite store.

Everything PvF Studio writes lives under one folder, ``$PVF_HOME`` (default ``~/.pvf-studio``):

    models/     converted model folders (the bundled GGUF becomes safetensors once)
    datasets/   the CSV files the user registered, named by content hash
    runs/       one folder per run: settings, progress log, adapter, predictions
    reports/    exported comparison reports
    pvf.sqlite  datasets, runs and prompt versions

In demo mode (``pvf_core/demo.py``) each browser session has its own workspace, ``$PVF_HOME/sessions/<id>``,
chosen per thread with ``use_workspace`` / ``set_session_workspace``; ``workspace()`` returns it.

The store opens a short-lived connection per call, so it is safe from Streamlit's threads and from
job processes alike. Schema changes are appended to ``MIGRATIONS`` and applied once, in order.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

DEFAULT_HOME = "~/.pvf-studio"

MIGRATIONS: list[tuple[str, str]] = [
    ("001_initial", """
        CREATE TABLE datasets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            path TEXT NOT NULL,
            task TEXT NOT NULL,
            mapping TEXT NOT NULL,      -- JSON: ColumnMapping
            split TEXT NOT NULL,        -- JSON: SplitSettings
            n_rows INTEGER NOT NULL,
            test_path TEXT,             -- a separate test file, if the user gave one
            created REAL NOT NULL
        );
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,         -- prompt | finetune | compare | ...
            dataset_id INTEGER REFERENCES datasets(id),
            name TEXT NOT NULL DEFAULT '',
            settings TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'created',  -- created | queued | running | done | failed | cancelled
            metrics TEXT NOT NULL DEFAULT '{}',
            timings TEXT NOT NULL DEFAULT '{}',
            error TEXT NOT NULL DEFAULT '',
            folder TEXT NOT NULL DEFAULT '',
            pid INTEGER,
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE TABLE prompt_versions (
            id INTEGER PRIMARY KEY,
            dataset_id INTEGER REFERENCES datasets(id),
            name TEXT NOT NULL,
            spec TEXT NOT NULL,         -- JSON: PromptSpec
            run_id INTEGER REFERENCES runs(id),
            created REAL NOT NULL
        );
        CREATE INDEX runs_by_dataset ON runs(dataset_id, kind);
    """),
]

RUN_JSON_FIELDS = ("settings", "metrics", "timings")


# Demo mode gives every browser session its own workspace inside one process. The override is looked up
# first in this context (``use_workspace``, set at the top of each script run), then through a resolver the
# app installs (Streamlit fragments rerun in fresh threads without that context), then ``$PVF_HOME``.
_session_workspace: ContextVar[Path | None] = ContextVar("pvf_session_workspace", default=None)
_resolver: Callable[[], Path | None] | None = None


def root_workspace() -> Path:
    """``$PVF_HOME`` itself, whatever session is active (demo mode keeps session folders under it)."""
    return Path(os.environ.get("PVF_HOME") or DEFAULT_HOME).expanduser()


def workspace() -> Path:
    """The workspace folder (this session's in demo mode, else ``$PVF_HOME``), created on first use."""
    home = _session_workspace.get() or (_resolver() if _resolver else None) or root_workspace()
    home.mkdir(parents=True, exist_ok=True)
    return home


def set_session_workspace(path: str | Path | None) -> Token:
    """Make ``path`` the workspace of the current context (thread); None goes back to ``$PVF_HOME``."""
    return _session_workspace.set(Path(path) if path else None)


@contextmanager
def use_workspace(path: str | Path | None) -> Iterator[Path]:
    """Everything inside the block reads and writes the workspace at ``path``."""
    token = set_session_workspace(path)
    try:
        yield workspace()
    finally:
        _session_workspace.reset(token)


def set_workspace_resolver(resolver: Callable[[], Path | None] | None) -> None:
    """Install a function that names the caller's session workspace (or None) when no context sets one."""
    global _resolver
    _resolver = resolver


def workspace_dir(*parts: str) -> Path:
    """A sub-folder of the workspace, created on first use."""
    path = workspace().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Run:
    id: int
    kind: str
    dataset_id: int | None
    name: str
    settings: dict[str, Any]
    status: str
    metrics: dict[str, Any]
    timings: dict[str, Any]
    error: str
    folder: str
    pid: int | None
    created: float
    updated: float

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


@dataclass
class DatasetRecord:
    id: int
    name: str
    content_hash: str
    path: str
    task: str
    mapping: dict[str, Any]
    split: dict[str, Any]
    n_rows: int
    test_path: str | None
    created: float


@dataclass
class PromptVersion:
    id: int
    dataset_id: int | None
    name: str
    spec: dict[str, Any]
    run_id: int | None
    created: float
    metrics: dict[str, Any] = field(default_factory=dict)


class Store:
    """The SQLite database of one workspace."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else workspace() / "pvf.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def _migrate(self) -> None:
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied REAL)")
            done = {row["name"] for row in conn.execute("SELECT name FROM migrations")}
            for name, sql in MIGRATIONS:
                if name not in done:
                    conn.executescript(sql)
                    conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))

    # -- datasets -------------------------------------------------------------------------------------
    def add_dataset(self, *, name: str, content_hash: str, path: str, task: str, mapping: dict,
                    split: dict, n_rows: int, test_path: str | None = None) -> int:
        with self.connect() as conn:
            cur = conn.execute(
                "INSERT INTO datasets (name, content_hash, path, task, mapping, split, n_rows, test_path, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, content_hash, path, task, json.dumps(mapping), json.dumps(split), n_rows, test_path,
                 time.time()))
            return int(cur.lastrowid)

    def get_dataset(self, dataset_id: int) -> DatasetRecord | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        return _dataset(row) if row else None

    def find_dataset(self, content_hash: str, mapping: dict, split: dict) -> DatasetRecord | None:
        """The dataset already registered with this content, mapping and split, if any."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM datasets WHERE content_hash = ? AND mapping = ? AND split = ? ORDER BY id DESC",
                (content_hash, json.dumps(mapping), json.dumps(split))).fetchone()
        return _dataset(row) if row else None

    def list_datasets(self) -> list[DatasetRecord]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM datasets ORDER BY id DESC").fetchall()
        return [_dataset(r) for r in rows]

    # -- runs -----------------------------------------------------------------------------------------
    def add_run(self, kind: str, *, dataset_id: int | None = None, name: str = "",
                settings: dict | None = None, status: str = "created", folder: str = "") -> int:
        now = time.time()
        with self.connect() as conn:
            cur = conn.execute(
                "INSERT INTO runs (kind, dataset_id, name, settings, status, folder, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, dataset_id, name, json.dumps(settings or {}), status, folder, now, now))
            return int(cur.lastrowid)

    def update_run(self, run_id: int, **fields: Any) -> None:
        allowed = {"name", "settings", "status", "metrics", "timings", "error", "folder", "pid"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        values = {k: json.dumps(v) if k in RUN_JSON_FIELDS else v for k, v in fields.items()}
        values["updated"] = time.time()
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self.connect() as conn:
            conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))

    def get_run(self, run_id: int) -> Run | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def list_runs(self, kind: str | None = None, dataset_id: int | None = None,
                  status: str | None = None) -> list[Run]:
        query, args = "SELECT * FROM runs WHERE 1=1", []
        for column, value in (("kind", kind), ("dataset_id", dataset_id), ("status", status)):
            if value is not None:
                query += f" AND {column} = ?"
                args.append(value)
        with self.connect() as conn:
            rows = conn.execute(query + " ORDER BY id DESC", args).fetchall()
        return [_run(r) for r in rows]

    def delete_run(self, run_id: int) -> None:
        """Forget a run (its folder is the caller's to remove; see ``pvf_core.manage``)."""
        with self.connect() as conn:
            conn.execute("UPDATE prompt_versions SET run_id = NULL WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def run_number(self, run: Run) -> int:
        """The run's number among the runs of its kind on its dataset: 1 for the first fine-tuning run of a dataset."""
        with self.connect() as conn:
            row = conn.execute("SELECT COUNT(*) FROM runs WHERE kind = ? AND dataset_id IS ? AND id <= ?",
                               (run.kind, run.dataset_id, run.id)).fetchone()
        return int(row[0])

    # -- prompt versions ------------------------------------------------------------------------------
    def rename_prompt_version(self, version_id: int, name: str) -> None:
        with self.connect() as conn:
            conn.execute("UPDATE prompt_versions SET name = ? WHERE id = ?", (name, version_id))
            conn.execute("UPDATE runs SET name = ? WHERE id = (SELECT run_id FROM prompt_versions WHERE id = ?)",
                         (name, version_id))

    def delete_prompt_version(self, version_id: int) -> int | None:
        """Forget a prompt version; returns the id of its run (not deleted here), if it had one."""
        with self.connect() as conn:
            row = conn.execute("SELECT run_id FROM prompt_versions WHERE id = ?", (version_id,)).fetchone()
            conn.execute("DELETE FROM prompt_versions WHERE id = ?", (version_id,))
        return int(row[0]) if row and row[0] is not None else None

    def add_prompt_version(self, *, dataset_id: int | None, name: str, spec: dict,
                           run_id: int | None = None) -> int:
        with self.connect() as conn:
            cur = conn.execute(
                "INSERT INTO prompt_versions (dataset_id, name, spec, run_id, created) VALUES (?, ?, ?, ?, ?)",
                (dataset_id, name, json.dumps(spec), run_id, time.time()))
            return int(cur.lastrowid)

    def list_prompt_versions(self, dataset_id: int | None = None) -> list[PromptVersion]:
        query = ("SELECT p.*, r.metrics AS run_metrics FROM prompt_versions p"
                 " LEFT JOIN runs r ON r.id = p.run_id")
        args: list[Any] = []
        if dataset_id is not None:
            query += " WHERE p.dataset_id = ?"
            args.append(dataset_id)
        with self.connect() as conn:
            rows = conn.execute(query + " ORDER BY p.id", args).fetchall()
        return [PromptVersion(id=r["id"], dataset_id=r["dataset_id"], name=r["name"], spec=json.loads(r["spec"]),
                              run_id=r["run_id"], created=r["created"],
                              metrics=json.loads(r["run_metrics"] or "{}")) for r in rows]


def _run(row: sqlite3.Row) -> Run:
    data = dict(row)
    for key in RUN_JSON_FIELDS:
        data[key] = json.loads(data[key] or "{}")
    return Run(**data)


def _dataset(row: sqlite3.Row) -> DatasetRecord:
    data = dict(row)
    data["mapping"] = json.loads(data["mapping"])
    data["split"] = json.loads(data["split"])
    return DatasetRecord(**data)
