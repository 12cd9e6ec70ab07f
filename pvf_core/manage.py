"""Managing saved work: name, delete (with its files) and compare prompt versions and runs.

    rename_version(store, version_id, name)      rename_run(store, run_id, name)
    delete_version(store, version_id)            delete_run(store, run_id)      (files under the workspace go too)
    prompt_text_diff(store, a, b)                -> the unified diff of two versions' rendered prompt text
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path
from typing import Any

from .errors import SettingsError
from .store import workspace

MAX_NAME = 80


def clean_name(name: str) -> str:
    """A name as typed, on one line and not too long; refuses an empty one."""
    cleaned = " ".join(str(name).split())[:MAX_NAME]
    if not cleaned:
        raise SettingsError("A name cannot be empty.", "Type a few words that say what this version tries.")
    return cleaned


def rename_version(store: Any, version_id: int, name: str) -> str:
    name = clean_name(name)
    store.rename_prompt_version(version_id, name)
    return name


def rename_run(store: Any, run_id: int, name: str) -> str:
    name = clean_name(name)
    store.update_run(run_id, name=name)
    return name


def _remove_folder(folder: str | None) -> bool:
    """Delete a run's folder, but only one inside this workspace (never a folder the user named elsewhere)."""
    if not folder:
        return False
    path = Path(folder).resolve()
    root = workspace().resolve()
    if root not in path.parents or not path.is_dir():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def delete_run(store: Any, run_id: int) -> None:
    """Delete a finished run and its folder (adapter, logs, kept results). A running job must be cancelled first."""
    run = store.get_run(run_id)
    if run is None:
        return
    if run.status in ("running", "queued"):
        raise SettingsError("This run is still going; cancel it before deleting it.")
    _remove_folder(run.folder)
    store.delete_run(run_id)


def delete_version(store: Any, version_id: int) -> None:
    """Delete a prompt version, its scoring run and that run's folder (kept answers, export)."""
    run_id = store.delete_prompt_version(version_id)
    if run_id is not None:
        delete_run(store, run_id)


def prompt_text_diff(store: Any, a: Any, b: Any) -> list[str]:
    """What changed in the prompt the model reads, from version ``a`` to ``b`` (unified diff lines of the
    rendered prompt text: system message, examples, where the row goes)."""
    from .export import export_prompt_version

    texts = [(Path(export_prompt_version(v.id, store=store)) / "prompt.txt").read_text(encoding="utf-8")
             for v in (a, b)]
    return list(difflib.unified_diff(texts[0].splitlines(), texts[1].splitlines(), fromfile=a.name, tofile=b.name,
                                     lineterm="", n=2))
