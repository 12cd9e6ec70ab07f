"""The Prompt builder's "Find a better prompt for me" step: a budget, a live leaderboard, the winner scored
once on the test rows, kept as a version and applied to the form, with what changed in plain words."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd
import streamlit as st

from pvf_core import demo
from pvf_core.errors import PvfError
from pvf_core.prompting import PromptSpec
from pvf_core.compare.stats import metric_name
from pvf_core.search import SearchSettings, rows_phrase, search_prompt

RESULT_KEY = "pb_search"  # the last search: explanation, leaderboard, scores, version name (plain data)
PENDING_KEY = "pb_search_apply"  # the winner's spec, put into the form at the top of the next run
MAX_CANDIDATES: int | None = None  # None: as many as the budget allows (tests fix it)
DEFAULT_BUDGET = 120
DEMO_BUDGET = 60
LEADERBOARD_COLUMNS = {"rank": "#", "candidate": "prompt tried", "calibration": "calibration", "score": "score (%)",
                       "rows": "rows judged", "chosen": "chosen", "ms_per_row": "ms per row"}


def apply_pending(dataset: Any, apply: Callable[[PromptSpec, Any], None]) -> None:
    """Put a search winner into the form (must run before the form's widgets are drawn)."""
    pending = st.session_state.pop(PENDING_KEY, None)
    if pending and pending["dataset"] == dataset.id:
        apply(PromptSpec.from_dict(pending["spec"]), dataset)


def show(dataset: Any, start: PromptSpec | None, *, loaded: Callable[[], Any],
         run_winner: Callable[[PromptSpec, Callable], Any], keep: Callable[[PromptSpec, Any], Any]) -> None:
    """Draw the step. ``run_winner(spec, on_progress)`` scores a spec on the test rows; ``keep(spec, result)``
    saves it as a prompt version and returns the version."""
    st.subheader("Find a better prompt for me")
    limit = DEMO_BUDGET if demo.enabled() else 600
    st.caption("PvF Studio tries other instructions, other words for the answers (including the words the model "
               "itself prefers for each answer's training rows), 0 to 8 examples picked in different ways, and "
               "calibration. It chooses on the validation rows (topped up with training rows, never shown to "
               "themselves as examples), never on the test rows; the winner is then scored once on the test rows "
               "and kept as a new version. Your form is the starting point and one of the candidates; it (or the default "
               "4-shot prompt, if better) is kept unless another prompt leads it by more than the noise of those rows.")
    budget = st.slider("Time to spend (seconds)", 30, limit, min(DEFAULT_BUDGET, limit), step=30,
                       key="pb_search_budget",
                       help="More time tries more prompts and judges the best on more rows.")
    if st.button("Find a better prompt", key="pb_search_go", disabled=start is None):
        _run(dataset, start, budget, loaded, run_winner, keep)
    last = st.session_state.get(RESULT_KEY)
    if last and last["dataset"] == dataset.id:
        _show_result(last)


def _run(dataset: Any, start: PromptSpec, budget: int, loaded: Callable[[], Any],
         run_winner: Callable[[PromptSpec, Callable], Any], keep: Callable[[PromptSpec, Any], Any]) -> None:
    bar = st.progress(0.0, text="Starting the search…")
    board = st.empty()

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(min(done / total, 1.0) if total else 1.0, text=message)

    def leaderboard(rows: list[dict]) -> None:
        board.dataframe(leaderboard_frame(rows, "chrf" if dataset.task == "text-to-text" else "accuracy"),
                        hide_index=True, use_container_width=True)

    try:
        found = search_prompt(loaded(), start, train=dataset.splits.train, validation=dataset.splits.validation,
                              settings=SearchSettings(budget_seconds=float(budget), seed=start.seed,
                                                      max_candidates=MAX_CANDIDATES),
                              on_progress=progress, on_leaderboard=leaderboard)
        bar.progress(1.0, text="Scoring the winner once on the test rows…")
        result = run_winner(found.spec, progress)
        result.search = found.to_dict()
        version = keep(found.spec, result)
    except PvfError as error:
        bar.empty()
        st.error(error.message + (f"  \n{error.hint}" if error.hint else ""))
        return
    bar.empty()
    board.empty()
    st.session_state[RESULT_KEY] = {
        "dataset": dataset.id, "search": found.to_dict(), "version": version.name, "metrics": result.metrics,
        "task": dataset.task}
    st.session_state[PENDING_KEY] = {"dataset": dataset.id, "spec": found.spec.to_dict()}
    st.rerun()


def leaderboard_frame(rows: list[dict], metric: str = "accuracy") -> pd.DataFrame:
    """The leaderboard with plain column names; scores in percent (chrF as is)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame[[c for c in LEADERBOARD_COLUMNS if c in frame.columns]].copy()
    frame["score"] = (frame["score"] * (1 if metric == "chrf" else 100)).round(1)
    return frame.rename(columns=LEADERBOARD_COLUMNS)


def _show_result(last: dict) -> None:
    search = last["search"]
    metric = search["metric"]
    scale = 1 if metric == "chrf" else 100
    name = metric_name(metric)
    test_score = last["metrics"].get(metric)
    found = "No prompt was clearly better; the one" if (search.get("guard") or {}).get("kept") else "Best prompt found,"
    st.success(f"{found} kept as **{last['version']}** and put into the form: {name} "
               f"{search['validation_score'] * scale:.1f} on {rows_phrase(search['rows'], search['selection_rows'])}, "
               f"{test_score * scale:.1f} on the test rows (scored once, after choosing).")
    for line in search["explanation"]:
        st.markdown(f"- {line}")
    for warning in search["warnings"]:
        st.warning(warning["message"])
    stopped = {"budget": "The time ran out before every candidate was judged on all rows; the best of those "
                         "judged furthest won.", "cancelled": "The search was stopped early."}.get(search["stopped"])
    with st.expander(f"Leaderboard: {search['evaluated']} of {search['candidates']} planned prompts tried in "
                     f"{search['seconds']:.0f} s"):
        if stopped:
            st.caption(stopped)
        st.caption("Each prompt was first judged on a few rows; the best third went on to three times as many, and "
                   "so on. A score is on the rows in its row, so compare scores with the same number of rows.")
        st.dataframe(leaderboard_frame(search["leaderboard"], metric), hide_index=True, use_container_width=True)
