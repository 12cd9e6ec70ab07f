"""Views of a classification result that stay readable with many labels (50 to 500).

Beyond ``MAX_MATRIX_LABELS`` labels a confusion matrix is a wall of tiny squares, so ``show`` draws instead:
the recall of the out-of-scope labels (``oos``, ``other``...) on its own, the most confused pairs, and one
row per label, worst first, that can be filtered by name and re-sorted. Callers keep their matrix for a
few labels: ``if not label_views.show(metrics, key): <draw the matrix>``.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pvf_core.metrics import MAX_MATRIX_LABELS, most_confused_pairs, out_of_scope_recall, per_label_rows

SORTS = {"worst first (lowest F1)": ("F1 %", True), "most test rows first": ("test rows", False),
         "lowest recall first": ("found %", True), "by name": ("label", True)}


def many_labels(metrics: dict) -> bool:
    return len(metrics.get("labels") or []) > MAX_MATRIX_LABELS


def show(metrics: dict, key: str) -> bool:
    """Draw the many-label views and return True, or return False (draw nothing) for a few labels."""
    if not many_labels(metrics):
        return False
    out_of_scope(metrics)
    st.markdown(f"**Most confused pairs** ({len(metrics['labels'])} labels: too many for a confusion matrix)")
    pairs = pd.DataFrame(most_confused_pairs(metrics), columns=["true", "predicted", "rows", "share_of_true"])
    if pairs.empty:
        st.caption("No row went to a wrong label.")
    else:
        pairs["share_of_true"] = (pairs["share_of_true"] * 100).round(1)
        st.dataframe(pairs.rename(columns={"true": "expected", "predicted": "answered instead",
                                           "share_of_true": "% of expected's rows"}),
                     hide_index=True, key=f"{key}_pairs")
    per_label(metrics, key)
    return True


def out_of_scope(metrics: dict) -> None:
    """The out-of-scope labels' recall, shown apart: in routing, missing them matters most."""
    scope = out_of_scope_recall(metrics)
    if scope is None:
        return
    names = ", ".join(f"'{label}'" for label in scope["labels"])
    st.metric(f"Out of scope ({names}) recognised", f"{scope['recall']:.0%}" if scope["test_rows"] else "no test rows",
              help="Share of the out-of-scope test rows that were answered as out of scope. A router that misses "
                   "them sends unanswerable requests to a team.")
    st.caption(f"{scope['found']} of {scope['test_rows']} out-of-scope rows recognised; {scope['false_alarms']} of "
               f"{scope['in_scope_rows']} in-scope rows were wrongly answered as out of scope.")


def per_label(metrics: dict, key: str) -> None:
    """One row per label: filter by name, choose the order (worst first by default)."""
    frame = pd.DataFrame(per_label_rows(metrics))
    frame = pd.DataFrame({
        "label": frame["label"], "test rows": frame["test_rows"], "found %": (frame["recall"] * 100).round(1),
        "right when said %": (frame["precision"] * 100).round(1), "F1 %": (frame["f1"] * 100).round(1),
        "answered": frame["predicted_rows"], "most mistaken for": frame["most_mistaken_for"],
        "out of scope": frame["out_of_scope"]})
    left, right = st.columns(2)
    wanted = left.text_input("Filter labels", key=f"{key}_label_filter", placeholder="part of a label's name")
    order = right.selectbox("Order", list(SORTS), key=f"{key}_label_order")
    if wanted.strip():
        frame = frame[frame["label"].str.contains(wanted.strip(), case=False, regex=False)]
    column, ascending = SORTS[order]
    if column != "F1 %":  # the library's order (worst first, ties by rows) is kept for the default
        frame = frame.sort_values(column, ascending=ascending, kind="stable")
    st.caption(f"Per label: {len(frame)} of {len(metrics['labels'])} shown. Click a column's name to sort by it.")
    st.dataframe(frame, hide_index=True, key=f"{key}_per_label", height=min(38 + 35 * len(frame), 420))
