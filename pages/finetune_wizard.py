"""Fine-tuning wizard (coming next: this page lands with its issue)."""

import streamlit as st

from ui.dataset import require_dataset

st.title("Fine-tuning wizard")
dataset = require_dataset()
st.info("This part of PvF Studio is being built and lands next.")
