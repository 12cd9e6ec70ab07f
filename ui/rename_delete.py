"""One row of controls to rename or delete a saved thing (a run, a prompt version); the same on every page."""

from __future__ import annotations

from typing import Callable

import streamlit as st

from pvf_core.errors import PvfError


def rename_delete(prefix: str, item_id: int, name: str, *, label: str, rename: Callable[[str], None],
                  delete: Callable[[], None], delete_help: str, can_delete: bool = True) -> None:
    """A name box with Rename and Delete buttons (keys ``{prefix}_name_{id}``, ``{prefix}_rename``, ``{prefix}_delete``).

    ``rename(new_name)`` and ``delete()`` do the work; a refused rename shows its plain message. The page reruns
    after either succeeds.
    """
    left, middle, right = st.columns([3, 1, 1], vertical_alignment="bottom")
    new_name = left.text_input(label, value=name, key=f"{prefix}_name_{item_id}", max_chars=80)
    if middle.button("Rename", key=f"{prefix}_rename", use_container_width=True):
        try:
            rename(new_name)
        except PvfError as error:
            st.error(error.message)
        else:
            st.rerun()
    if right.button("Delete", key=f"{prefix}_delete", use_container_width=True, disabled=not can_delete,
                    help=delete_help):
        delete()
        st.rerun()
