"""Widgets for a settings dataclass, made from its field metadata (label, help, range, choices).

The help a user reads in a tooltip is the field's ``metadata["help"]`` (``pvf_core.settings.setting``), made
into a tooltip by ``ui.settings_help.tip``: it is written once, next to the field, and also becomes CLI
``--help`` and ``docs/settings.md``.

    values = settings_widgets(LoraSettings, current, key="ftw", advanced=False)   # {field: value}
    push_values(LoraSettings, preset_settings("quick"), key="ftw")                # e.g. in a button callback

Widget keys are ``f"{key}_{field}"``. A widget's first value comes from ``current`` (set behind a guard, so
a value the user typed is kept); ``push_values`` overwrites them, e.g. when a preset is picked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import streamlit as st

from ui.settings_help import label, tip


def widget_key(key: str, name: str) -> str:
    return f"{key}_{name}"


def _kind(f: dataclasses.Field) -> str:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if f.metadata.get("choices"):
        return "choice"
    return kind if kind in ("bool", "int", "float") else "str"


def _as_widget_value(f: dataclasses.Field, value: Any) -> Any:
    kind = _kind(f)
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    return value


def _float_step(f: dataclasses.Field) -> float:
    """A step for the +/- buttons from the field's default: 1 from 1 up, else its power of ten (5e-4 → 1e-4)."""
    default = f.default if f.default is not dataclasses.MISSING else 0.0
    if default >= 1:
        return 1.0
    if default > 0:
        return 10.0 ** math.floor(math.log10(default))
    low, high = f.metadata.get("min"), f.metadata.get("max")
    return (high - low) / 100 if low is not None and high is not None else 0.01


def push_values(cls: type, values: Any, key: str) -> None:
    """Set the widgets of ``cls`` to ``values`` (a settings object or a dict); call before they are drawn."""
    data = values if isinstance(values, dict) else dataclasses.asdict(values)
    for f in dataclasses.fields(cls):
        if f.name in data:
            st.session_state[widget_key(key, f.name)] = _as_widget_value(f, data[f.name])


def settings_widgets(cls: type, current: Any, key: str, *, advanced: bool | None = None, columns: int = 1,
                     bounds: dict[str, tuple[float | None, float | None]] | None = None,
                     disabled: bool = False, slider_step: float | None = None) -> dict[str, Any]:
    """One widget per field of ``cls`` (only the advanced or the basic ones when ``advanced`` is given).

    ``bounds`` narrows a field's range (e.g. the public demo's limit on epochs); ``slider_step`` draws the
    float fields as sliders with that step (weights, where the position matters more than the digits).
    Returns ``{field: value}`` for the fields drawn; build the settings object from it (its
    ``__post_init__`` checks the values).
    """
    fields = [f for f in dataclasses.fields(cls)
              if advanced is None or bool(f.metadata.get("advanced")) == advanced]
    slots = st.columns(columns) if columns > 1 else [st.container()]
    values = {}
    for i, f in enumerate(fields):
        name = widget_key(key, f.name)
        if name not in st.session_state:
            st.session_state[name] = _as_widget_value(f, getattr(current, f.name))
        with slots[i % len(slots)]:
            values[f.name] = _widget(cls, f, name, (bounds or {}).get(f.name), disabled, slider_step)
    return values


def _widget(cls: type, f: dataclasses.Field, name: str, bound: tuple | None, disabled: bool,
            slider_step: float | None = None) -> Any:
    meta = f.metadata
    text, help_text = label(cls, f.name), tip(cls, f.name)
    low, high = bound or (meta.get("min"), meta.get("max"))
    kind = _kind(f)
    if kind in ("int", "float"):  # a value pushed from outside the range (e.g. a preset above a demo limit)
        value = st.session_state[name]
        clamped = min(max(value, low if low is not None else value), high if high is not None else value)
        if clamped != value:
            st.session_state[name] = _as_widget_value(f, clamped)
    if kind == "bool":
        return st.checkbox(text, help=help_text, key=name, disabled=disabled)
    if kind == "choice":
        return st.selectbox(text, list(meta["choices"]), help=help_text, key=name, disabled=disabled)
    if kind == "int":
        return st.number_input(text, min_value=None if low is None else int(low),
                               max_value=None if high is None else int(high), step=1, help=help_text, key=name,
                               disabled=disabled)
    if kind == "float" and slider_step and low is not None and high is not None:
        return st.slider(text, float(low), float(high), step=slider_step, help=help_text, key=name, disabled=disabled)
    if kind == "float":
        return st.number_input(text, min_value=None if low is None else float(low),
                               max_value=None if high is None else float(high), step=_float_step(f), format="%g",
                               help=help_text, key=name, disabled=disabled)
    return st.text_input(text, help=help_text, key=name, disabled=disabled)
