"""Follow a background job on a page: progress bar, percent and time left, live loss chart, warnings, cancel.

    status = job_view.follow(run_id, key="ftw")

While the job is queued or running, the view redraws itself every ``POLL_SECONDS`` (``st.fragment``,
so only this part of the page reruns) from the job's JSON-lines log; when the job ends it reruns the whole
page once, so the page can show the result. A finished job is drawn once, without polling. The view
reads everything from the workspace (``pvf_core.jobs``), so a reload or another browser finds it again.
"""

from __future__ import annotations

import streamlit as st

from pvf_core import jobs
from pvf_core.errors import PvfError
from pvf_core.report import loss_figure

POLL_SECONDS = 2
LOSS_HELP = ("**Training loss**: how wrong the model still is on the rows it learns from. **Validation loss**: "
             "the same on held-out rows it never learns from, the honest one. Both should fall. When validation "
             "loss rises while training loss keeps falling, the model is memorising its training rows instead "
             "of learning the task (overfitting); PvF Studio keeps the checkpoint with the lowest validation "
             "loss.")


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min``, ``1.5 h``: a time for people."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def follow(run_id: int, *, key: str, loss_chart: bool = True, cancel_label: str = "Cancel training",
           done_text: str = "Finished: trained and scored on the test rows.",
           started: float | None = None) -> jobs.JobStatus:
    """Draw the job's progress (live while it runs); its status as it was when the page ran.

    ``key`` prefixes the widget keys (the cancel button is ``f"{key}_cancel_{run_id}"``); ``started`` (a
    timestamp) shows as "started 3 min ago", kept up to date while the job runs.
    """
    status = jobs.job_status(run_id)
    words = {"cancel_label": cancel_label, "done_text": done_text, "started": started}
    if status.active:
        _live(run_id, key, loss_chart, words)
    else:
        _draw(status, key, loss_chart, words)
    return status


@st.fragment(run_every=POLL_SECONDS)
def _live(run_id: int, key: str, loss_chart: bool, words: dict) -> None:
    status = jobs.job_status(run_id)
    _draw(status, key, loss_chart, words)
    if status.finished:
        st.rerun()  # the whole page: it shows the result now


def _draw(status: jobs.JobStatus, key: str, loss_chart: bool, words: dict) -> None:
    events = jobs.read_progress(status.run_id)
    steps = [e for e in events if e.get("event") == "progress"]
    if words.get("started"):
        st.caption(f"Started {ago(words['started'])}.")
    if status.status == "queued":
        ahead = (status.queue_position or 1) - 1
        st.info("Waiting for the run before it to finish: one training runs at a time"
                + (f" ({ahead} more ahead of it)." if ahead > 0 else "."), icon="⏳")
    elif status.status == "running":
        fill, text = _progress(status, steps)
        st.progress(fill, text=text)
    elif status.status == "done":
        st.progress(1.0, text=words["done_text"])
    elif status.status == "cancelled":
        st.info(f"Cancelled at {status.percent:.0f}%. Nothing was saved; start a new run when you like.", icon="⏹️")
    elif status.status == "failed":
        st.error(f"The run failed. {status.error or status.message}")
    if status.active and st.button(words["cancel_label"], key=f"{key}_cancel_{status.run_id}",
                                   icon=":material/stop_circle:"):
        with st.spinner("Stopping the run…"):
            try:
                jobs.cancel(status.run_id)
            except PvfError as error:
                st.error(str(error))
        st.rerun()

    for warning in status.warnings:  # what happened during training, in plain words, above the chart
        if warning.get("code") == "overfitting":
            st.warning(f"**Overfitting.** {warning['message']}", icon="📉")
        elif warning.get("code") == "early_stopping":
            st.info(warning["message"], icon="🛑")
    if loss_chart and any(e.get("train_loss") is not None or e.get("val_loss") is not None for e in steps):
        st.plotly_chart(loss_figure(steps, total_steps=status.total_steps or None), key=f"{key}_loss_{status.run_id}")
        st.caption(LOSS_HELP)
    for warning in status.warnings:  # what the data check said when the run started
        if warning.get("code") not in ("overfitting", "early_stopping"):
            st.caption(f"Note: {warning['message']}")

    with st.expander("The same run from a terminal"):
        st.caption("PvF Studio started this command in the background; it writes its progress to the run's "
                   "folder, which is how this page follows it.")
        st.code(jobs.command_line(status.run_id), language="bash", wrap_lines=True)


def _progress(status: jobs.JobStatus, steps: list[dict]) -> tuple[float, str]:
    """The bar's fill and its text: loading, training step n of N with time left, or scoring."""
    if not steps:
        return 0.0, "Starting: loading the model and preparing the rows…"
    if status.total_steps and status.step >= status.total_steps and not steps[-1].get("message"):
        return 1.0, "Training finished; now scoring the test rows with the new adapter…"
    if steps[-1].get("message"):  # a job of several stages (a comparison) says which one it is in
        text = f"{status.percent:.0f}% · {steps[-1]['message']}"
    else:
        text = f"{status.percent:.0f}% · step {status.step} of {status.total_steps}"
    if status.eta_seconds:
        text += f" · about {duration(status.eta_seconds)} left"
        if status.pace is not None:  # a comparison: the estimate's remaining stages at the pace so far
            text += f" ({pace_words(status.pace)})"
    elif status.status == "running" and not steps[-1].get("message"):
        text += " · measuring the speed; the time left shows after a few steps"
    return min(status.percent / 100, 1.0), text


def pace_words(pace: float) -> str:
    """How a comparison's time left was made: its estimate's rest, rescaled by the pace so far."""
    if abs(pace - 1) < 0.1:
        return "by the estimate, on pace so far"
    return f"by the estimate, the work so far taking {pace:.1f}× its predicted time"


def ago(timestamp: float) -> str:
    """``just now``, ``5 min ago``, ``3 h ago``, else the date: when something happened."""
    import time

    seconds = time.time() - timestamp
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))
