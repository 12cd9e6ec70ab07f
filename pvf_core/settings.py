"""Settings as dataclasses whose fields carry their own help.

Each settings field declares ``metadata={"help": ..., "min": ..., "max": ..., "choices": ...}`` once;
pages turn it into widget tooltips, the CLI into ``--help`` text and ``docs/settings.md`` is generated
from it. ``check_ranges`` is called from ``__post_init__`` and names the bad field and its range.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from .errors import SettingsError


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            choices: tuple | None = None, label: str | None = None, advanced: bool = False) -> Any:
    """A dataclass field with its help text and allowed range."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "label": label, "advanced": advanced}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_help(cls: type, name: str) -> str:
    """The plain-language help of one settings field."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}[name]


def field_label(field: dataclasses.Field) -> str:
    return field.metadata.get("label") or field.name.replace("_", " ").capitalize()


def known_fields(cls: type, data: dict, *, skip: tuple[str, ...] = ()) -> dict:
    """The entries of ``data`` that are fields of the dataclass ``cls``; unknown keys warn (as in peft's configs).

    Files written by a newer version then still load, and a typo in a settings file is said, not fatal.
    """
    known = {f.name for f in dataclasses.fields(cls)} - set(skip)
    unknown = sorted(set(data) - known)
    if unknown:
        warnings.warn(f"{cls.__name__}: ignoring unknown settings {unknown}", stacklevel=3)
    return {k: v for k, v in data.items() if k in known}


def check_ranges(obj: Any) -> None:
    """Raise ``SettingsError`` naming the first field outside its declared range or choices."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        low, high, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
        label = field_label(f)
        if choices is not None and value not in choices:
            raise SettingsError(f"{label} must be one of {', '.join(map(str, choices))}; got {value!r}.")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if low is not None and value < low:
                raise SettingsError(f"{label} must be at least {low}; got {value}.")
            if high is not None and value > high:
                raise SettingsError(f"{label} must be at most {high}; got {value}.")


def settings_markdown(cls: type) -> str:
    """A markdown table of a settings class: name, default, range, help (for docs/settings.md)."""
    rows = [f"### {cls.__name__}", "", (cls.__doc__ or "").strip(), "",
            "| setting | default | allowed | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        allowed = ", ".join(map(str, f.metadata["choices"])) if f.metadata.get("choices") else \
            " – ".join(str(v) for v in (f.metadata.get("min"), f.metadata.get("max")) if v is not None)
        rows.append(f"| `{f.name}` | `{default}` | {allowed} | {f.metadata.get('help', '')} |")
    return "\n".join(rows) + "\n"
