"""A notice on whatever page the user is on when one of their long jobs (training, a comparison) finishes.

    watch_jobs()   in app.py, on every script run: remembers this session's running jobs and, while there
                   are any, checks them every few seconds (``st.fragment``); when one ends, ``st.toast``.

No job running, no polling: an idle page stays idle.
"""

from __future__ import annotations

import streamlit as st

from pvf_core import jobs
from pvf_core.store import Store

WATCHED_KEY = "pvf_watched_jobs"  # run id -> what to call it
POLL_SECONDS = 5
KINDS = {"finetune": "Training", "compare": "The comparison"}
ENDINGS = {"done": ("finished", ":material/check_circle:"), "failed": ("failed", ":material/error:"),
           "cancelled": ("was cancelled", ":material/cancel:")}


def watch_jobs() -> None:
    watched = st.session_state.setdefault(WATCHED_KEY, {})
    try:
        for run in jobs.active_jobs():
            watched.setdefault(run.id, f"{KINDS.get(run.kind, 'The job')} “{run.name}”" if run.name
                               else KINDS.get(run.kind, "The job"))
    except Exception:  # noqa: BLE001 - a notice must never break the page it sits on
        return
    if watched:
        _announce_finished()
        if st.session_state[WATCHED_KEY]:
            _poll()


@st.fragment(run_every=POLL_SECONDS)
def _poll() -> None:
    _announce_finished()


def _announce_finished() -> None:
    watched = st.session_state.get(WATCHED_KEY, {})
    store = Store()
    for run_id, name in list(watched.items()):
        run = store.get_run(run_id)
        if run is None:
            watched.pop(run_id)
        elif run.finished:
            watched.pop(run_id)
            ending, icon = ENDINGS.get(run.status, (run.status, None))
            st.toast(f"{name} {ending}.", icon=icon)
