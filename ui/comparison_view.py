"""Shows a finished comparison: recommendation, scores, significance, costs, curves, disagreements, exports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from pvf_core.search import found_lines
from pvf_core.compare import (
    CAUTION,
    Comparison,
    CostModel,
    Priorities,
    disagreements,
    inference_memory,
    latency,
    latency_label,
    metric_name,
    p_text,
)
from pvf_core.compare.costs import base_model
from pvf_core.report import (
    comparison_figures,
    decision_rule_lines,
    readable_metrics_table,
    write_report,
)
from ui import label_views
from ui.settings_form import settings_widgets
from ui.settings_help import label, tip


def show(comparison: Comparison, folder: Path) -> None:
    with st.expander("What decides, your prices and traffic (the recommendation updates)", expanded=False):
        left, right = st.columns(2)
        with left:
            priorities = _decision_widgets(comparison)
        with right:
            cost_model = CostModel(**settings_widgets(CostModel, comparison.cost_model, "cmp_cost"))
    if (priorities, cost_model) != (comparison.priorities, comparison.cost_model):
        comparison = comparison.reweighted(cost_model, priorities)

    rec = comparison.recommendation
    with st.container(border=True):
        st.subheader(f"Recommendation: use **{rec.arm}**")
        st.caption(f"Decided on {rec.rule.get('metric_reason') or metric_name(comparison.metric)}")
        for reason in rec.reasons:
            if reason.startswith(CAUTION):
                st.warning(reason, icon=":material/warning:")
            else:
                st.markdown(f"- {reason}")
        st.markdown("**What would change the answer**")
        for change in rec.what_would_change:
            st.markdown(f"- {change}")
        with st.expander("How the recommendation was decided (every threshold it used)"):
            for line in decision_rule_lines(comparison):
                st.markdown(f"- {line}")

    figures = comparison_figures(comparison)
    st.subheader("Scores, cost and speed on the same test rows")
    models = sorted({base_model(r) for r in comparison.results})  # an adapter runs on its base model
    if len(models) > 1:
        st.info(f"These arms use different models ({', '.join(models)}): a difference in scores is also a "
                "difference in model size and cost, not only in prompting or fine-tuning.")
    st.dataframe(_readable_table(comparison), hide_index=True)
    for note in _table_notes(comparison):
        st.caption(note)
    for result in comparison.results:
        if getattr(result, "search", None):
            with st.expander(f"How “{result.arm}” was found"):
                for line in found_lines(result.search, result.metrics.get(result.search.get("metric"))):
                    st.markdown(f"- {line}")
    st.plotly_chart(figures["quality"], key="cmp_quality")
    st.subheader("Is the difference real?")
    st.caption(f"Paired tests on {metric_name(comparison.metric)}, the deciding score: "
               + ("exact McNemar on the rows only one arm got right." if comparison.metric == "accuracy" else
                  "paired bootstrap (the same resampled rows for both arms)."))
    for test in comparison.tests:
        (st.success if test.significant else st.info)(test.sentence())
    if len(comparison.tests) > 1:
        st.dataframe(_tests_table(comparison), hide_index=True)
    left, right = st.columns(2)
    left.plotly_chart(figures["cost"], key="cmp_cost_chart")
    if "learning_curve" in figures:
        right.plotly_chart(figures["learning_curve"], key="cmp_curve")
        if comparison.crossover:
            right.caption(comparison.crossover["sentence"])
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


METRIC_LABELS = {"auto": "automatic (follows the data)", "accuracy": "accuracy", "macro_f1": "macro-F1",
                 "chrf": "chrF"}


def _decision_widgets(comparison: Comparison) -> Priorities:
    """The metric, the practical threshold and the tie-break: the only things a user sets about the decision."""
    current = comparison.priorities
    choices = ["auto", "accuracy", "macro_f1"] if comparison.task == "classification" else ["auto"]
    st.session_state.setdefault("cmp_prio_metric", current.metric if current.metric in choices else "auto")
    metric = st.selectbox(label(Priorities, "metric"), choices, format_func=METRIC_LABELS.get,
                          help=tip(Priorities, "metric"), key="cmp_prio_metric")
    st.session_state.setdefault("cmp_prio_min_difference", float(current.min_difference))
    threshold = st.slider(label(Priorities, "min_difference") + " (points)", 0.0, 20.0, step=0.5,
                          help=tip(Priorities, "min_difference"), key="cmp_prio_min_difference")
    st.session_state.setdefault("cmp_prio_among_equals", current.among_equals)
    among = st.radio(label(Priorities, "among_equals"), ["cheaper", "higher score"], horizontal=True,
                     help=tip(Priorities, "among_equals"), key="cmp_prio_among_equals")
    return Priorities(metric=metric, min_difference=float(threshold), among_equals=among)


def _readable_table(comparison: Comparison) -> pd.DataFrame:
    return readable_metrics_table(comparison)  # the same table the HTML report shows


def _table_notes(comparison: Comparison) -> list[str]:
    """What the cost, latency and memory columns are, so nobody reads wall-clock noise as cost."""
    notes = []
    costs = [c for c in comparison.costs if c.basis == "computed tokens"]
    if costs:
        times = sorted({(c.runs_on, c.ms_per_token) for c in costs})
        notes.append("Cost per text = computed tokens per text (after the shared prompt prefix is cached) × the "
                     "per-token time measured for the model in this run ("
                     + "; ".join(f"{model or 'model'}: {t:.3g} ms" for model, t in times)
                     + "). Arms with the same tokens on the same model cost the same; a merged adapter costs what "
                     "its base model costs. Finished training is shown, not counted as a cost of choosing.")
    if len(costs) < len(comparison.costs):
        notes.append("Some results carry no token counts (older runs): their cost per text is their measured time.")
    lat = [latency(r) for r in comparison.results]
    notes.append("Latency: " + "; ".join(sorted({latency_label(x) for x in lat})) + ".")
    per_arm = [inference_memory(r)[1] for r in comparison.results]
    notes.append("Memory answering: " + ("measured for each arm on its own." if all(per_arm) else
                                         "the process's peak (older results: it includes anything run before, "
                                         "such as training)."))
    return notes


def _tests_table(comparison: Comparison) -> pd.DataFrame:
    """Every pairwise test with its raw and adjusted p-value (Holm), as the decision used them."""
    rows = []
    for t in comparison.tests:
        rows.append({"arms": f"{t.b} vs {t.a}",
                     f"difference ({metric_name(t.metric)} points)": round(t.difference * 100, 1),
                     "p": p_text(t.p_value, t.resamples),
                     "p adjusted (Holm)": p_text(t.p_adjusted, t.resamples) if t.p_adjusted is not None else "–",
                     "comparisons corrected for": t.family, "significant": "yes" if t.significant else "no"})
    return pd.DataFrame(rows)


def _known(value) -> bool:
    return value is not None and value == value


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
