"""A progress bar with an ETA for work that runs inside the page (an evaluation on the test rows)."""

from __future__ import annotations

import time

import streamlit as st


class ProgressBar:
    """Pass as ``on_progress(done, total, message)``; shows the share done, the time left and the message."""

    def __init__(self, text: str) -> None:
        self.bar = st.progress(0.0, text=text)
        self.started = time.monotonic()

    def __call__(self, done: int, total: int, message: str) -> None:
        share = done / total if total else 1.0
        elapsed = time.monotonic() - self.started
        left = elapsed / done * (total - done) if done else None
        eta = f" · about {_duration(left)} left" if left is not None and done < total else ""
        self.bar.progress(min(share, 1.0), text=f"{share:.0%}{eta} · {message}")

    def done(self) -> None:
        self.bar.empty()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
