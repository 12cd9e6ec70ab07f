"""Shows a finished comparison: recommendation, scores, significance, costs, curves, disagreements, exports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from pvf_core.compare import CAUTION, Comparison, CostModel, Priorities, disagreements
from pvf_core.report import comparison_figures, readable_metrics_table, write_report
from ui.settings_form import settings_widgets


def show(comparison: Comparison, folder: Path) -> None:
    with st.expander("Your priorities, prices and traffic (the recommendation updates)", expanded=False):
        left, right = st.columns(2)
        with left:
            priorities = Priorities(**settings_widgets(Priorities, comparison.priorities, "cmp_prio", slider_step=0.5))
        with right:
            cost_model = CostModel(**settings_widgets(CostModel, comparison.cost_model, "cmp_cost"))
    if (priorities, cost_model) != (comparison.priorities, comparison.cost_model):
        comparison = comparison.reweighted(cost_model, priorities)

    rec = comparison.recommendation
    with st.container(border=True):
        st.subheader(f"Recommendation: use **{rec.arm}**")
        for reason in rec.reasons:
            if reason.startswith(CAUTION):
                st.warning(reason, icon=":material/warning:")
            else:
                st.markdown(f"- {reason}")
        st.markdown("**What would change the answer**")
        for change in rec.what_would_change:
            st.markdown(f"- {change}")

    figures = comparison_figures(comparison)
    st.subheader("Scores, speed and cost on the same test rows")
    st.dataframe(_readable_table(comparison), hide_index=True)
    st.plotly_chart(figures["quality"], key="cmp_quality")
    st.subheader("Is the difference real?")
    for test in comparison.tests:
        (st.success if test.significant else st.info)(test.sentence())
    left, right = st.columns(2)
    left.plotly_chart(figures["cost"], key="cmp_cost_chart")
    if "learning_curve" in figures:
        right.plotly_chart(figures["learning_curve"], key="cmp_curve")
        if comparison.crossover_rows:
            right.caption(f"Fine-tuning overtakes prompting from about {comparison.crossover_rows} labelled rows.")
        else:
            right.caption("Fine-tuning did not overtake prompting for good within your data.")
    else:
        right.info("No learning curve in this comparison: tick “learning curve” when you run it.")
    confusions = [name for name in figures if name.startswith("confusion:")]
    if confusions:
        st.subheader("Where each arm goes wrong")
        for column, name in zip(st.columns(len(confusions)), confusions):
            column.plotly_chart(figures[name], key=f"cmp_{name}")
    st.subheader("Rows where the arms disagree")
    table = disagreements(comparison.results)
    arms = [r.arm for r in comparison.results]
    who = st.selectbox("Show rows where", ["any arm differs"] + [f"{a} is wrong" for a in arms], key="cmp_filter")
    if who != "any arm differs":
        arm = who.removesuffix(" is wrong")
        table = table[table[arm] != table["expected"]]
    st.caption(f"{len(table)} rows")
    st.dataframe(table, hide_index=True, height=300)
    _exports(comparison, folder)


def _readable_table(comparison: Comparison) -> pd.DataFrame:
    return readable_metrics_table(comparison)  # the same table the HTML report shows


def _exports(comparison: Comparison, folder: Path) -> None:
    """Download buttons; the files are written only when a button is pressed (deferred data)."""
    st.subheader("Export")

    def export(kind: str):
        return lambda: Path(write_report(comparison, folder)[kind]).read_bytes()

    left, middle, right = st.columns(3)
    left.download_button("Report (HTML)", export("html"), "pvf-report.html", "text/html", key="cmp_dl_html",
                         on_click="ignore")
    middle.download_button("Predictions (CSV)", export("csv"), "pvf-predictions.csv", "text/csv", key="cmp_dl_csv",
                           on_click="ignore")
    right.download_button("Everything (JSON)", export("json"), "pvf-comparison.json", "application/json",
                          key="cmp_dl_json", on_click="ignore")
