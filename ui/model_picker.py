"""Home's model choice: the bundled model, a hub id (where the hub is reachable) or a local folder.

Before a model is used its size, context length and the memory it needs are shown, read from its config
without loading the weights; a model that will not fit is refused with the reason.
"""

from __future__ import annotations

import streamlit as st

from pvf_core import model_choice, models
from pvf_core.errors import PvfError
from ui import state

SOURCES = ("Bundled (runs offline)", "Hugging Face hub", "A folder on this machine")


def label(name: str) -> str:
    return models.BUNDLED_LABEL if name == models.BUNDLED else name


def _check(name: str) -> dict:
    """The model's size and needs from its config (cached per process in pvf_core; free memory read now)."""
    with st.spinner("Reading the model's configuration…"):
        return model_choice.check_model(name).to_dict()


def show() -> None:
    """The model section: pick, check, use."""
    current = state.selected_model()
    with st.expander(f"Model: **{label(current)}**", expanded=False):
        if not st.toggle("Choose the model", key="model_choose",
                         help="A bigger model may prompt better, and costs more time and memory."):
            st.caption(f"Prompting, fine-tuning and comparisons use {label(current)}. Turn on to choose the "
                       "bundled model, a model from the Hugging Face hub or a model folder on this machine.")
            return
        source = st.radio("Which model", SOURCES, horizontal=True, key="model_source",
                          index=0 if current == models.BUNDLED else (2 if "/" not in current or
                                                                     current.startswith(("/", ".", "~")) else 1))
        if source == SOURCES[0]:
            name = models.BUNDLED
        elif source == SOURCES[1]:
            reachable, reason = model_choice.hub_status()
            if not reachable:
                st.info(reason)
                return
            name = st.selectbox("Model id on the hub", model_choice.SUGGESTED_HUB_MODELS, key="model_hub",
                                accept_new_options=True,
                                help="Suggested sizes: 360M and 1.7B (SmolLM2) and 0.5B (Qwen2.5); or type any "
                                     "instruction-tuned model's id.")
        else:
            name = st.text_input("Model folder", key="model_folder",
                                 help="A folder with config.json, the weights as *.safetensors and the tokenizer.")
            if not name.strip():
                st.info("Type the path of a model folder on this machine.")
                return
        try:
            check = _check(name.strip())
        except PvfError as error:
            st.error(str(error))
            return
        cols = st.columns(3)
        cols[0].metric("Parameters", f"{check['parameters'] / 1e6:,.0f}M")
        cols[1].metric("Context length", f"{check['context_length']:,} tokens")
        cols[2].metric("Memory to run it", f"{check['needed_mb'] / 1024:.1f} GB",
                       help=f"To load it and score with it on the {check['device'].upper()}; "
                            f"{check['available_mb'] / 1024:.1f} GB are free now. Fine-tuning needs more: its "
                            "estimate is on the fine-tuning page.")
        if not check["fits"]:
            st.error(f"This model will not fit. {check['reason']}")
            return
        if name.strip() == current:
            st.success(f"The pages use {label(current)}.")
        elif st.button("Use this model", key="model_use", type="primary"):
            state.select_model(name.strip())
            st.rerun()
