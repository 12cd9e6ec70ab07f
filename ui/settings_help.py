"""Widget tooltips from settings metadata: the help of a field is written once, in its dataclass."""

from __future__ import annotations

import dataclasses

from pvf_core.settings import field_label


def _field(cls: type, name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def tip(cls: type, name: str) -> str:
    """A field's help text, with its allowed range when it has one (for a widget's ``help=``)."""
    meta = _field(cls, name).metadata
    low, high = meta.get("min"), meta.get("max")
    allowed = (f" Allowed: {low} to {high}." if low is not None and high is not None else
               f" At least {low}." if low is not None else "")
    return meta["help"] + allowed


def label(cls: type, name: str) -> str:
    """A field's label ('Examples (shots)'), as the CLI and docs name it."""
    return field_label(_field(cls, name))
