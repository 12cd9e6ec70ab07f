"""Errors that are shown to the user.

A ``PvfError`` carries a plain-language message (what went wrong) and a hint (what to do about it).
The CLI prints it as one line and exits with code 2; pages show it with ``st.error``. Anything else is
a bug and surfaces as exit code 1.
"""

from __future__ import annotations


class PvfError(Exception):
    """A problem the user can understand and act on."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class DataError(PvfError):
    """The data (a CSV file, a column mapping, a split) cannot be used."""


class ModelLoadError(PvfError):
    """A model could not be found or loaded."""


class SettingsError(PvfError):
    """A setting is outside its allowed range."""


class JobError(PvfError):
    """A background job could not be started, or failed."""
