"""The few session-state keys the pages share, set in one place.

``dataset_id``: the selected dataset (an id in the store). It is mirrored into the ``?dataset=`` query
parameter so that a page reload, or a shared link, opens the same dataset.
"""

from __future__ import annotations

import streamlit as st

DATASET_KEY = "dataset_id"


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
