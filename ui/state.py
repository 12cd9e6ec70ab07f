"""The few session-state keys the pages share, set in one place.

``dataset_id``: the selected dataset (an id in the store). It is mirrored into the ``?dataset=`` query
parameter so that a page reload, or a shared link, opens the same dataset.

``finetune_run_id``: the fine-tuning run the wizard shows (running or finished), mirrored into ``?run=``
so that a reload reopens it (``opened_run`` / ``open_run``).

``model_name``: the model the pages' jobs use ('bundled', a hub id or a folder; chosen on Home), mirrored
into ``?model=``; unset, it is ``$PVF_MODEL`` or the bundled model (``selected_model`` / ``select_model``).
"""

from __future__ import annotations

import streamlit as st

DATASET_KEY = "dataset_id"
FINETUNE_RUN_KEY = "finetune_run_id"
MODEL_KEY = "model_name"


def selected_dataset_id() -> int | None:
    """The selected dataset id, from the session or, after a reload, from the URL."""
    if DATASET_KEY not in st.session_state:
        from_url = st.query_params.get("dataset")
        st.session_state[DATASET_KEY] = int(from_url) if from_url and from_url.isdigit() else None
    dataset_id = st.session_state[DATASET_KEY]
    if dataset_id is not None and st.query_params.get("dataset") != str(dataset_id):
        st.query_params["dataset"] = str(dataset_id)  # page switches drop query params; put it back
    return dataset_id


def select_dataset(dataset_id: int | None) -> None:
    st.session_state[DATASET_KEY] = dataset_id
    if dataset_id is None:
        st.query_params.pop("dataset", None)
    else:
        st.query_params["dataset"] = str(dataset_id)


def opened_run(key: str = FINETUNE_RUN_KEY, param: str = "run") -> int | None:
    """The run a page shows, from the session or, after a reload, from the URL's ``?run=``."""
    if key not in st.session_state:
        from_url = st.query_params.get(param)
        st.session_state[key] = int(from_url) if from_url and from_url.isdigit() else None
    run_id = st.session_state[key]
    if run_id is not None and st.query_params.get(param) != str(run_id):
        st.query_params[param] = str(run_id)  # page switches drop query params; put it back
    return run_id


def open_run(run_id: int | None, key: str = FINETUNE_RUN_KEY, param: str = "run") -> None:
    st.session_state[key] = run_id
    if run_id is None:
        st.query_params.pop(param, None)
    else:
        st.query_params[param] = str(run_id)


def selected_model() -> str:
    """The model the pages use: chosen on Home, or after a reload from ``?model=``, else the default."""
    from pvf_core.models import default_model

    if MODEL_KEY not in st.session_state:
        st.session_state[MODEL_KEY] = st.query_params.get("model") or None
    name = st.session_state[MODEL_KEY]
    if name and st.query_params.get("model") != name:
        st.query_params["model"] = name  # page switches drop query params; put it back
    return name or default_model()


def select_model(name: str | None) -> None:
    from pvf_core.models import default_model

    name = None if not name or name == default_model() else name
    st.session_state[MODEL_KEY] = name
    if name is None:
        st.query_params.pop("model", None)
    else:
        st.query_params["model"] = name
