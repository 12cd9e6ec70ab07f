"""The selected-dataset banner every work page starts with."""

from __future__ import annotations

import streamlit as st

from pvf_core.data import Dataset
from ui import resources, state


def require_dataset() -> Dataset:
    """The selected dataset, or an explanation and a link home (then the page stops)."""
    dataset = resources.current_dataset(state.selected_dataset_id())
    if dataset is None:
        st.info("Pick a dataset first: the sample, or your own CSV. On Home, check its columns, then press "
                "**Use this dataset** at the bottom.")
        st.page_link("pages/home.py", label="Choose data", icon=":material/home:")
        st.stop()
    sizes = dataset.splits.sizes()
    model = state.selected_model()
    st.caption(f"Dataset: **{dataset.name}** · {dataset.task} · {sizes['train']} train / "
               f"{sizes['validation']} validation / {sizes['test']} test rows · model: "
               f"{'bundled SmolLM2-135M' if model == 'bundled' else model} (choose it on Home)")
    return dataset
