"""PvF Studio: the Streamlit entry point. Page config and navigation only; each page lives in pages/."""

import streamlit as st

from ui import notices, session

st.set_page_config(page_title="PvF Studio: prompt or fine-tune?", page_icon=":material/balance:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home: your data", icon=":material/home:", default=True),
    st.Page("pages/prompt_builder.py", title="Prompt builder", icon=":material/edit_note:"),
    st.Page("pages/finetune_wizard.py", title="Fine-tuning wizard", icon=":material/tune:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/balance:"),
    st.Page("pages/images.py", title="Images", icon=":material/image:"),
    st.Page("pages/use.py", title="Use it", icon=":material/play_circle:"),
]

with session.guard():  # a full disk or a model that fails to load: a plain message, not a traceback
    session.enter()  # demo mode (PVF_DEMO=1): this browser session's own workspace and the limits banner
    notices.watch_jobs()  # a toast on any page when a training or comparison of this session ends
    st.navigation(PAGES).run()
