"""Helpers every AppTest module uses."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def run(target) -> AppTest:
    """Run the app (``target`` is the AppTest or a widget just changed) and check it raised nothing."""
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]
