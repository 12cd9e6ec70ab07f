"""Shows a finished comparison: recommendation, scores, significance, costs, curves, disagreements, exports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from pvf_core.compare import CAUTION, Comparison, CostModel, Priorities, disagreements
from pvf_core.report import comparison_figures, write_report
from ui import label_views
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
    many = [r for r in comparison.results if r.task == "classification" and label_views.many_labels(r.metrics)]
    if many:
        st.subheader("Where each arm goes wrong")
        for tab, result in zip(st.tabs([r.arm for r in many]), many):
            with tab:
                label_views.show(result.metrics, f"cmp_labels_{result.arm}")
    elif confusions:
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
    table = comparison.metrics_table()
    metric = "accuracy" if comparison.task == "classification" else "chrf"
    scale = 100 if metric == "accuracy" else 1
    out = pd.DataFrame({"arm": table["arm"], "kind": table["kind"]})
    out[metric] = [f"{v * scale:.1f} ({lo * 100:.1f}–{hi * 100:.1f})" if lo is not None else f"{v * scale:.1f}"
                   for v, lo, hi in zip(table[metric], table[f"{metric}_low"], table[f"{metric}_high"])]
    second = "macro_f1" if metric == "accuracy" else "exact_match"
    out[second] = (table[second] * 100).round(1)
    out["ms per text (p50 / p95)"] = [f"{a:.0f} / {b:.0f}" for a, b in zip(table["latency_ms_p50"], table["latency_ms_p95"])]
    out["prompt tokens per text"] = table["prompt_tokens_per_query"].round(0)
    out["peak memory (MB)"] = table["peak_memory_mb"].round(0)
    out["training (s)"] = table["train_seconds"].round(0)
    out["$ per 1,000 texts"] = table["cost_per_1000_queries"].map(lambda v: f"{v:.4f}")
    out["$ per month"] = table["monthly_cost"].map(lambda v: f"{v:,.2f}")
    return out


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
