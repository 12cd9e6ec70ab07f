"""Plotly figures and exports shared by the pages, the CLI and the HTML report."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

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
