"""PvF Studio: the Streamlit entry point. Page config and navigation only; each page lives in pages/."""

import streamlit as st

st.set_page_config(page_title="PvF Studio: prompt or fine-tune?", page_icon="⚖️", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home: your data", icon="🏠", default=True),
    st.Page("pages/prompt_builder.py", title="Prompt builder", icon="✍️"),
    st.Page("pages/finetune_wizard.py", title="Fine-tuning wizard", icon="🛠️"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
]

st.navigation(PAGES).run()
