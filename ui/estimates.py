"""Time estimates on the pages: the standard comparison's before it starts, and predicted against actual after."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pvf_core.compare.estimate import LATENCY_ROWS, estimate_comparison, training_token_seconds
from pvf_core.data import load_dataset
from pvf_core.errors import PvfError
from pvf_core.finetune import preset_settings
from pvf_core.store import workspace
from ui import resources
from ui.job_view import duration

ESTIMATE_TTL_SECONDS = 300  # the speed is measured again after this long (the machine's load changes)
# Real single queries timed per arm while the page draws: none. Timing them delays the whole page (over a
# minute on a busy 2-core machine); the page's estimate takes a latency row's fixed part from the speed probe,
# and the comparison, once started, times a few of its real queries (estimate.LATENCY_SAMPLE) in its own process.
PAGE_SAMPLE = 0


@st.cache_data(ttl=ESTIMATE_TTL_SECONDS, show_spinner="Estimating the time (measuring this machine's speed)…")
def _comparison_estimate(workspace_key: str, dataset_id: int, model: str, shots: tuple[int, ...], max_train: int,
                         limit: int, curve: bool, epochs: float | None) -> dict | str:
    """``workspace_key`` keys the cache: dataset numbers are per workspace (each demo visitor has one)."""
    try:
        dataset = load_dataset(dataset_id)
        lora = preset_settings("balanced", seed=0, epochs=epochs)
        return estimate_comparison(dataset.splits, model=model, shots=shots, max_train=max_train, limit=limit,
                                   lora=lora, learning_curve=curve, loaded=resources.model(model),
                                   sample=PAGE_SAMPLE).to_dict()
    except PvfError as error:
        return error.message


@st.cache_data(ttl=ESTIMATE_TTL_SECONDS, show_spinner="Measuring this machine's speed…")
def _training_speed(workspace_key: str, model: str) -> float | None:
    try:
        return training_token_seconds(model, load=lambda: resources.model(model))
    except PvfError:
        return None


def training_speed(model: str) -> float | None:
    """Seconds per training token for the fine-tuning estimate: the speed the comparison estimate measured last
    (kept in the workspace for an hour), else measured now (loads the model once per process)."""
    return _training_speed(str(workspace()), model)


def comparison_estimate(dataset_id: int, model: str, shots, max_train: int, limit: int, curve: bool,
                        epochs: float | None) -> None:
    """A caption with the standard comparison's estimated time, part by part (computed tokens x speed now)."""
    found = _comparison_estimate(str(workspace()), dataset_id, model, tuple(sorted(int(k) for k in shots)),
                                 int(max_train), int(limit), bool(curve), epochs)
    if isinstance(found, str):
        st.caption(f"No time estimate: {found}")
        return
    parts = ", ".join(f"{name} {duration(seconds)}" for name, seconds in found["parts"].items())
    latency = sum((found.get("latency") or {}).values())
    st.markdown(f"**Estimated time here: about {duration(found['seconds'])}** ({parts}).",
                help="Tokens the comparison will compute (the prompts as they will be rendered, every training "
                     f"batch) times this machine's speed measured now ({found['speed']['ms_per_token']:.2f} ms per "
                     f"scored token); training speed from {found['basis']}. Each arm also answers its first "
                     f"{LATENCY_ROWS} test rows one query at a time to measure latency (about {duration(latency)} in "
                     "all, from single probe queries timed now; once started, the comparison times a few of its "
                     "real queries and updates this). Early stopping can end training sooner; other "
                     "work on the machine makes it slower. While it runs, the time left is this estimate's rest, "
                     "rescaled by how long the work so far took against it.")


def predicted_against_actual(timings: dict) -> None:
    """A finished comparison's estimate beside what it took, part by part (kept in the run's timings)."""
    predicted, actual = timings.get("predicted_seconds"), timings.get("seconds")
    if not predicted or not actual:
        return
    with st.expander(f"Time: predicted {duration(predicted)}, took {duration(actual)} "
                     f"({actual / predicted:.2f}× the estimate)"):
        parts, took = timings.get("predicted_parts") or {}, timings.get("actual_parts") or {}
        rows = [{"part": name, "predicted (s)": parts.get(name), "took (s)": took.get(name)}
                for name in list(dict.fromkeys([*parts, *took]))]
        latency, timed = timings.get("predicted_latency") or {}, timings.get("actual_latency") or {}
        rows += [{"part": f"  of which {arm}'s latency rows", "predicted (s)": latency.get(arm),
                  "took (s)": timed.get(arm)} for arm in dict.fromkeys([*latency, *timed])]
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        st.caption("Predicted when the comparison started, from the tokens it would compute and the speed "
                   "measured then; other work on the machine and early stopping move the actual time.")
