"""Process-wide cached resources: one loaded model per name, shared by every session (read-only)."""

from __future__ import annotations

import streamlit as st

from pvf_core import models
from pvf_core.data import Dataset, load_dataset
from pvf_core.errors import PvfError
from ui import state


@st.cache_resource(show_spinner="Loading the model (the first start converts the bundled model, ~30 s)…")
def model(name: str | None = None) -> models.LoadedModel:
    return models.load_model(name or models.default_model())  # $PVF_MODEL, else the bundled model


@st.cache_resource(show_spinner="Reading the model's tokenizer…")
def token_counter(name: str | None = None):
    name = name or models.default_model()
    return models.token_counter(name), models.context_length_of(name)


@st.cache_resource(show_spinner="Preparing the tokenizer (the first start converts the bundled model, ~30 s)…")
def tokenizer(name: str | None = None):
    """The model's tokenizer with its chat template (prompt previews and budgets), without the weights."""
    return models.load_tokenizer(name or models.default_model())


def current_dataset(dataset_id: int | None) -> Dataset | None:
    """The selected dataset, or None with an error shown (once) when it cannot be opened."""
    if dataset_id is None:
        return None
    try:
        return load_dataset(dataset_id)
    except PvfError as error:
        st.error(str(error))
        state.select_dataset(None)  # a stale link or a reset workspace: forget it, so the error shows once
        return None
