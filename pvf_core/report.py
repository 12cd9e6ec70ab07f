"""Plotly figures and exports shared by the pages, the CLI and the HTML report."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .compare import metric_name, score_text, unchanged_input_metrics
from .metrics import MAX_MATRIX_LABELS

PALETTE = ["#4B5FD6", "#E4572E", "#17BEBB", "#FFC914", "#76B041", "#9C51B6", "#F28C28", "#5C6B73"]


def label_distribution_figure(splits_or_frames: dict[str, pd.DataFrame], title: str = "Answers per split",
                              max_labels: int = 30) -> go.Figure:
    """A grouped bar chart of how often each answer occurs in each split."""
    counts = {name: frame["label"].value_counts() for name, frame in splits_or_frames.items()}
    labels = list(pd.concat(counts.values()).groupby(level=0).sum().sort_values(ascending=False).index[:max_labels])
    fig = go.Figure()
    for i, (name, series) in enumerate(counts.items()):
        fig.add_bar(name=name, x=labels, y=[int(series.get(label, 0)) for label in labels],
                    marker_color=PALETTE[i % len(PALETTE)])
    fig.update_layout(title=title, barmode="group", height=320, margin=dict(l=10, r=10, t=40, b=10),
                      yaxis_title="rows", legend_orientation="h")
    return fig


def confusion_figure(matrix: list[list[int]], labels: list[str], title: str) -> go.Figure:
    """A confusion matrix heat map: rows are the true answers, columns the predicted ones."""
    names = [str(label) for label in labels]
    fig = go.Figure(go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", showscale=False,
                               text=matrix, texttemplate="%{text}",
                               hovertemplate="true answer %{y}<br>model's answer %{x}: %{z} rows<extra></extra>"))
    fig.update_layout(title=title, height=340, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(title=dict(text="model's answer", standoff=8), type="category", automargin=True,
                                 tickangle=0 if sum(len(n) for n in names) < 40 else -30),
                      yaxis=dict(title="true answer", type="category", automargin=True, autorange="reversed"))
    return fig


def metric_bars_figure(rows: list[dict], metric: str, unchanged: float | None = None) -> go.Figure:
    """One bar per arm with its 95% interval; ``rows`` have arm, value, low, high (0..1).

    ``unchanged`` (0..1, text-to-text) draws the score of leaving every text unchanged as a dashed line.
    """
    fig = go.Figure(go.Bar(
        x=[r["arm"] for r in rows], y=[r["value"] * 100 for r in rows],
        marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(rows))],
        error_y=dict(type="data", symmetric=False,
                     array=[(r.get("high", r["value"]) - r["value"]) * 100 for r in rows],
                     arrayminus=[(r["value"] - r.get("low", r["value"])) * 100 for r in rows]),
        text=[score_text(r["value"], metric, named=False) for r in rows], textposition="outside"))
    unit = "" if metric.lower() in ("chrf", "macro-f1") else " (%)"
    fig.update_layout(title=f"{metric} on the same test rows (bars: 95% interval)", height=340,
                      yaxis_title=f"{metric}{unit}", yaxis_range=[0, 105], margin=dict(l=10, r=10, t=40, b=10))
    if unchanged is not None:
        fig.add_hline(y=unchanged * 100, line_dash="dash", line_color="#555",
                      annotation_text=f"leaving the text unchanged: {score_text(unchanged, metric, named=False)}",
                      annotation_position="top left")
    return fig


def learning_curve_figure(curve: pd.DataFrame, metric: str) -> go.Figure:
    """Score against labelled rows for each method, mean with the spread over seeds."""
    fig = go.Figure()
    for i, (method, part) in enumerate(curve.groupby("method")):
        stats = part.groupby("rows")["score"].agg(["mean", "std"]).fillna(0).reset_index()
        fig.add_scatter(x=stats["rows"], y=stats["mean"] * 100, name=method, mode="lines+markers",
                        line_color=PALETTE[i % len(PALETTE)],
                        error_y=dict(type="data", array=stats["std"] * 100))
    fig.update_layout(title="Learning curve: score against labelled rows", height=340, xaxis_type="log",
                      xaxis_title="labelled rows used", yaxis_title=f"{metric} (%)",
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def cost_figure(curve: pd.DataFrame, break_even: float | None) -> go.Figure:
    """Total cost against queries served; the break-even point marked where the lines cross."""
    fig = go.Figure()
    for i, (arm, part) in enumerate(curve.groupby("arm", sort=False)):
        fig.add_scatter(x=part["queries"], y=part["total_cost"], name=arm, mode="lines",
                        line_color=PALETTE[i % len(PALETTE)])
    if break_even is not None and break_even <= curve["queries"].max():
        fig.add_vline(x=break_even, line_dash="dash", annotation_text=f"break-even ≈ {break_even:,.0f} queries")
    fig.update_layout(title="Total cost against queries served", height=340, xaxis_title="queries",
                      yaxis_title="dollars", margin=dict(l=10, r=10, t=40, b=10))
    return fig


def loss_figure(progress: list[dict], total_steps: int | None = None) -> go.Figure:
    """Training and validation loss per step, from a job's progress records.

    The step axis spans the whole run (``total_steps``) from the start and the loss axis starts at 0, so a
    run with one point so far shows that point in place, not alone on a -1…1 axis.
    """
    steps = [p for p in progress if p.get("train_loss") is not None]
    val = [p for p in progress if p.get("val_loss") is not None]
    fig = go.Figure()
    fig.add_scatter(x=[p["step"] for p in steps], y=[p["train_loss"] for p in steps], name="training loss",
                    mode="lines" if len(steps) > 1 else "markers", line_color=PALETTE[0])
    fig.add_scatter(x=[p["step"] for p in val], y=[p["val_loss"] for p in val], name="validation loss",
                    mode="lines+markers", line_color=PALETTE[1])
    last = max([p["step"] for p in progress if p.get("step") is not None] or [1])
    highest = max([p["train_loss"] for p in steps] + [p["val_loss"] for p in val] or [1.0])
    fig.update_layout(title="Loss (lower is better)", height=320, xaxis_title="step", yaxis_title="loss",
                      xaxis_range=[0, max(total_steps or 0, last, 1)], yaxis_range=[0, highest * 1.1],
                      margin=dict(l=10, r=10, t=40, b=10), legend_orientation="h")
    return fig


def per_class_frame(metrics: dict) -> pd.DataFrame:
    """One row per label of a classification result: its test rows, recall ("found"), precision ("right when
    said") and F1, in %."""
    columns = ["answer", "test rows", "found %", "right when said %", "F1 %"]
    rows = [(label, int(m.get("support", 0)), round(m["recall"] * 100, 1), round(m["precision"] * 100, 1),
             round(m["f1"] * 100, 1)) for label, m in (metrics.get("per_class") or {}).items()]
    return pd.DataFrame(rows, columns=columns)


def readable_metrics_table(comparison) -> pd.DataFrame:
    """The comparison's scores, speed and cost as people read them: plain column names with units, scores
    to 0.1 point. The Compare page and the HTML report show this same table."""
    from .compare import metric_name

    def known(value) -> bool:
        return value is not None and value == value

    table = comparison.metrics_table()
    metric = comparison.metric
    scale = 1 if metric == "chrf" else 100
    out = pd.DataFrame({"arm": table["arm"], "kind": table["kind"]})
    name = f"{metric_name(metric)} (95% interval)"
    out[name] = [f"{v * scale:.1f} ({lo * 100:.1f}–{hi * 100:.1f})" if known(lo) else f"{v * scale:.1f}"
                 for v, lo, hi in zip(table[metric], table[f"{metric}_low"], table[f"{metric}_high"])]
    for other in (["accuracy", "macro_f1"] if comparison.task == "classification" else ["exact_match"]):
        if other != metric:
            out[metric_name(other) if other != "exact_match" else "exact match"] = (table[other] * 100).round(1)
    bases = [(r.model or "?").removesuffix(" + adapter") for r in comparison.results]
    if len(set(bases)) > 1:  # arms of different models may be compared: say which model each one used
        out.insert(2, "model", bases)
    out["$ per 1,000 texts"] = table["cost_per_1000_queries"].map(lambda v: f"{v:.4f}")
    out["computed tokens per text"] = table["computed_tokens_per_query"].map(
        lambda v: f"{v:,.0f}" if known(v) else "–")
    out["ms per text, p50 / p95"] = [f"{a:.0f} / {b:.0f}" for a, b in zip(table["latency_ms_p50"],
                                                                         table["latency_ms_p95"])]
    out["memory answering (MB)"] = table["peak_memory_mb"].astype(float).round(0).astype("Int64")  # whole units
    out["training (s)"] = table["train_seconds"].astype(float).round(0).astype("Int64")  # whole units
    out["training peak memory (MB)"] = table["train_peak_memory_mb"].astype(float).round(0).astype("Int64")  # whole units
    out["$ per month"] = table["monthly_cost"].map(lambda v: f"{v:,.2f}")
    return out


# -- exports ----------------------------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """Neutralise a text cell that a spreadsheet would run as a formula (CSV injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_safe_csv(frame: pd.DataFrame, path) -> None:
    """Write a CSV whose text cells cannot run as spreadsheet formulas."""
    frame.map(safe_cell).to_csv(path, index=False)


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained HTML page; section bodies are HTML built with ``html.escape`` on user text."""
    import html

    body = "\n".join(f"<section><h2>{html.escape(heading)}</h2>\n{content}</section>" for heading, content in sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #1F2335; }}
table {{ border-collapse: collapse; margin: 1em 0; width: 100%; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccd; padding: 4px 8px; text-align: left; vertical-align: top; overflow-wrap: break-word; }}
table.rows td:nth-child(2) {{ overflow-wrap: anywhere; width: 45%; }}
th {{ background: #F3F5FB; font-weight: 600; }} td.num {{ text-align: right; }}
.card {{ background: #F3F5FB; border-left: 4px solid #4B5FD6; padding: 1em; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; }} .charts > div {{ flex: 0 0 auto; }}
.note {{ color: #5C6B73; font-size: 0.9em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def figure_html(fig: go.Figure, first: bool, width: int | None = None) -> str:
    """A figure as embedded HTML with room for its axis labels, ``width`` pixels wide (default: the page's
    width); the first one carries plotly.js so the file works offline."""
    fig = go.Figure(fig)  # a copy: the page's figure keeps its own layout
    margin = fig.layout.margin
    fig.update_layout(autosize=width is None, width=width,
                      margin=dict(l=max(margin.l or 0, 60), r=max(margin.r or 0, 20), t=max(margin.t or 0, 50),
                                  b=max(margin.b or 0, 60)))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig.to_html(full_html=False, include_plotlyjs="inline" if first else False,
                       default_width=f"{width}px" if width else "100%", config={"displaylogo": False})


def table_html(frame: pd.DataFrame, css_class: str | None = None) -> str:
    return frame.to_html(index=False, escape=True, border=0, classes=css_class)


# -- the comparison report ------------------------------------------------------------------------------

def comparison_figures(comparison) -> dict[str, go.Figure]:
    """Every chart of a comparison, by name (the page and the HTML report show the same ones)."""
    from .compare import cost_curve

    table = comparison.metrics_table()
    metric = comparison.metric
    scale = 100 if metric == "chrf" else 1
    bars = [{"arm": row["arm"], "value": row[metric] / scale,
             "low": row[f"{metric}_low"] if _known(row[f"{metric}_low"]) else row[metric] / scale,
             "high": row[f"{metric}_high"] if _known(row[f"{metric}_high"]) else row[metric] / scale}
            for row in table.to_dict("records")]
    unchanged = None if comparison.task == "classification" else \
        unchanged_input_metrics(comparison.results[0])["chrf"] / 100
    figures = {"quality": metric_bars_figure(bars, metric_name(metric), unchanged)}
    horizon = max(10_000, int((comparison.break_even or 0) * 2), comparison.cost_model.queries_per_month)
    figures["cost"] = cost_figure(cost_curve(comparison.costs, horizon), comparison.break_even)
    if comparison.curve:
        figures["learning_curve"] = learning_curve_figure(pd.DataFrame(comparison.curve), metric)
    if comparison.task == "classification" and len(comparison.labels or []) <= MAX_MATRIX_LABELS:
        for r in comparison.results:
            figures[f"confusion:{r.arm}"] = confusion_figure(r.metrics["confusion"], r.metrics["labels"], r.arm)
    return figures


def _known(value) -> bool:
    return value is not None and value == value  # not None, not NaN


def decision_rule_lines(comparison) -> list[str]:
    """The decision rule with the numbers it used, in sentences (the page and the report say the same)."""
    rule = comparison.recommendation.rule
    name = metric_name(comparison.metric)
    lines = [f"Deciding score: {rule.get('metric_reason') or name}",
             f"Practical threshold: differences under {rule.get('min_difference_points', 1.0):g} points of {name} "
             "do not separate two arms.",
             f"Significance: p below {rule.get('alpha', 0.05)}; "
             + (f"Holm's correction for the {rule.get('comparisons_corrected_for', 1)} comparisons between the arms "
                "that can be the answer (a comparison with an arm set aside counts as one more)."
                if rule.get("correction") == "Holm" else f"no correction for several comparisons was needed "
                f"({str(rule.get('correction', 'none')).removeprefix('none: ')})."),
             f"Costs per query within {rule.get('cost_noise', 0.1):.0%} of each other count as the same "
             "(token counts vary by text and the per-token time is one measurement).",
             "No weights: nothing adds criteria up or rescales by the best or worst arm, so adding an arm that is "
             "no better on any count cannot change the answer."]
    return lines + [f"Step {i}: {step}" for i, step in enumerate(rule.get("steps", []), 1)]


def decision_rule_html(comparison) -> str:
    import html

    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in decision_rule_lines(comparison)) + "</ul>"


def many_label_sections(comparison) -> list[tuple[str, str]]:
    """With more labels than a confusion matrix can show: each arm's most confused pairs and its worst labels
    (and the out-of-scope labels' recall), as tables."""
    import html

    from .metrics import most_confused_pairs, out_of_scope_recall, per_label_rows

    if comparison.task != "classification" or len(comparison.labels or []) <= MAX_MATRIX_LABELS:
        return []
    sections = []
    for r in comparison.results:
        pairs = pd.DataFrame(most_confused_pairs(r.metrics), columns=["true", "predicted", "rows", "share_of_true"])
        worst = pd.DataFrame(per_label_rows(r.metrics)).head(15)
        scope = out_of_scope_recall(r.metrics)
        names = html.escape(", ".join(scope["labels"])) if scope else ""
        note = "" if scope is None else (f"<p>Out of scope ({names}): {scope['found']} of {scope['test_rows']} "
                                         f"recognised, {scope['false_alarms']} false alarms.</p>")
        sections.append((f"{r.arm}: most confused pairs and worst labels",
                         note + table_html(pairs.round(3)) + table_html(worst.round(3))))
    return sections


def search_sections(comparison) -> list[tuple[str, str]]:
    """For each searched prompt arm: how it was found (the same lines as the Compare page)."""
    import html

    from .search import found_lines

    sections = []
    for r in comparison.results:
        if getattr(r, "search", None):
            lines = found_lines(r.search, r.metrics.get(r.search.get("metric")))
            sections.append((f"How \u201c{r.arm}\u201d was found",
                             "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"))
    return sections


def write_report(comparison, folder) -> dict[str, str]:
    """Write report.html (self-contained, charts embedded), predictions.csv and comparison.json."""
    import html
    import json
    from pathlib import Path

    from .compare import disagreements

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rec = comparison.recommendation
    card = (f"<div class='card'><p><b>Use {html.escape(rec.arm)}.</b></p><ul>"
            + "".join(f"<li>{html.escape(r)}</li>" for r in rec.reasons) + "</ul><p>What would change the answer:</p><ul>"
            + "".join(f"<li>{html.escape(w)}</li>" for w in rec.what_would_change) + "</ul></div>")
    figures = comparison_figures(comparison)
    names = list(figures)
    main = [n for n in names if not n.startswith("confusion:")]
    confusions = [n for n in names if n.startswith("confusion:")]
    charts = "".join(figure_html(figures[n], first=i == 0) for i, n in enumerate(main))
    wrong = ("<p class='note'>Rows: the true answer; columns: the model's answer; the diagonal holds the rows it "
             "got right.</p><div class='charts'>" + "".join(
                 f"<div>{figure_html(figures[n], first=False, width=350)}</div>" for n in confusions) + "</div>")
    tests = "<ul>" + "".join(f"<li>{html.escape(t.sentence())}</li>" for t in comparison.tests) + "</ul>"
    disagree = disagreements(comparison.results).head(50).rename(
        columns={"row": "test row", "text": "text", "expected": "true answer", "right": "right"})
    sections = [
        ("Recommendation", card),
        ("Scores, speed and cost on the same test rows", table_html(readable_metrics_table(comparison))),
        ("Is the difference real?", tests),
        ("How the recommendation was decided", decision_rule_html(comparison)),
        ("Charts", charts),
        *([("Where each arm goes wrong", wrong)] if confusions else []),
        *many_label_sections(comparison),
        *search_sections(comparison),
        ("Rows where the arms disagree (first 50)", table_html(disagree, "rows")),
        ("Settings", f"<pre>{html.escape(json.dumps({'cost_model': comparison.to_dict()['cost_model'], 'priorities': comparison.to_dict()['priorities']}, indent=2))}</pre>"),
    ]
    title = f"PvF Studio comparison: {comparison.dataset or 'your data'}"
    paths = {"html": folder / "report.html", "csv": folder / "predictions.csv", "json": folder / "comparison.json"}
    paths["html"].write_text(html_page(title, sections), encoding="utf-8")
    write_safe_csv(comparison.predictions_frame(), paths["csv"])
    comparison.save(folder)
    return {k: str(v) for k, v in paths.items()}


# -- the prompt builder ---------------------------------------------------------------------------------

def budget_figure(budget: dict) -> go.Figure:
    """The context bar: where the tokens of the longest query go, against the model's context length.

    ``budget`` is ``PromptBudget.to_dict()``.
    """
    parts = [("instruction", budget["system"]), ("examples", sum(budget["examples"])),
             ("longest row", budget["row_markup"] + budget["row_max"]), ("answer", budget["answer"]),
             ("free", max(budget["context_length"] - budget["worst_case"], 0))]
    colors = [PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[3], "#E6E8F0"]
    fig = go.Figure()
    for (name, tokens), color in zip(parts, colors):
        fig.add_bar(y=[""], x=[tokens], name=f"{name} {tokens:,}", orientation="h", marker_color=color,
                    hovertemplate=f"{name}: %{{x:,}} tokens<extra></extra>")
    fig.update_layout(barmode="stack", height=120, margin=dict(l=0, r=0, t=30, b=20), plot_bgcolor="white",
                      legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom", font_size=12, itemclick=False,
                                  itemdoubleclick=False, traceorder="normal"),
                      xaxis=dict(range=[0, budget["context_length"]], showgrid=False, tickformat=","),
                      yaxis_visible=False)
    return fig


def shares_figure(true_shares: dict[str, float], predicted: dict[str, float],
                  raw: dict[str, float] | None = None) -> go.Figure:
    """How often each label is the true answer and how often the model gives it (calibrated, and raw)."""
    labels = list(true_shares)
    series = [("true answers", true_shares, "#5C6B73"), ("model", predicted, PALETTE[0])]
    if raw is not None:
        series.append(("model, uncalibrated", raw, PALETTE[1]))
    fig = go.Figure()
    for name, shares, color in series:
        fig.add_bar(name=name, x=labels, y=[shares.get(label, 0.0) * 100 for label in labels], marker_color=color)
    fig.update_layout(title="Which answers the model gives", barmode="group", height=340, yaxis_title="% of rows",
                      margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", x=0, y=-0.15, yanchor="top", font_size=11))
    return fig


def version_history_figure(history: pd.DataFrame, metric: str, second: str | None = None) -> go.Figure:
    """Score of every saved prompt version, in order; error bars where the example-draw spread was measured.

    ``history`` is ``compare.prompt_history`` (scores 0-100).
    """
    names, said = list(history["name"]), {"macro_f1": "macro-F1", "chrf": "chrF", "exact_match": "exact match"}
    measured = bool(history["spread"].notna().any())
    fig = go.Figure()
    fig.add_scatter(x=names, y=history[metric].round(1), name=said.get(metric, metric), mode="lines+markers",
                    line_color=PALETTE[0], marker_size=9,
                    error_y=dict(type="data", array=history["spread"]) if measured else None)
    if second is not None:
        fig.add_scatter(x=names, y=history[second], name=said.get(second, second), mode="lines+markers",
                        line_color=PALETTE[2], line_dash="dot")
    title = "Scores of your prompt versions" + (" (whiskers: spread over example draws, where measured)"
                                                 if measured else "")
    fig.update_layout(title=title, height=320,
                      yaxis_title="score (0-100)", yaxis_range=[0, 105], margin=dict(l=10, r=10, t=40, b=10),
                      legend_orientation="h", xaxis_type="category")
    return fig
