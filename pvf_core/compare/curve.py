"""Learning curves: nested training subsets, their sizes, and where fine-tuning overtakes prompting."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

# -- learning curve -------------------------------------------------------------------------------------

def nested_subsets(train: pd.DataFrame, sizes: Sequence[int], *, task: str, seed: int = 0) -> dict[int, pd.DataFrame]:
    """Training subsets of growing size where each contains the smaller ones, stratified by label.

    One seeded order of the rows is made so that every prefix has the label mix of the whole set (a
    round-robin over shuffled classes); each size is a prefix of that order.
    """
    rng = np.random.default_rng(seed)
    if task == "classification":
        groups = [g.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).index.tolist()
                  for _, g in train.groupby("label")]
        shares = np.array([len(g) for g in groups], float) / len(train)
        order, taken = [], np.zeros(len(groups))
        for _ in range(len(train)):
            # take next from the class furthest below its share of what has been taken so far
            need = shares * (len(order) + 1) - taken
            for k in np.argsort(-need):
                if taken[k] < len(groups[k]):
                    order.append(groups[k][int(taken[k])])
                    taken[k] += 1
                    break
    else:
        order = list(rng.permutation(train.index))
    return {n: train.loc[order[:n]].reset_index(drop=True) for n in sorted(set(sizes)) if 0 < n <= len(train)}


def learning_curve_sizes(n_train: int, smallest: int = 16, factor: int = 4) -> list[int]:
    """16, 64, 256, ... up to and including all rows."""
    sizes, n = [], smallest
    while n < n_train:
        sizes.append(n)
        n *= factor
    return sizes + [n_train]


def crossover(curve: pd.DataFrame, metric: str = "score") -> int | None:
    """The smallest training size from which the fine-tuned arm scores above the prompted one (and stays)."""
    table = curve.pivot_table(index="rows", columns="method", values=metric, aggfunc="mean").sort_index()
    if not {"fine-tuning", "prompting"} <= set(table.columns):
        return None
    ahead = (table["fine-tuning"] > table["prompting"]).tolist()
    for i, rows in enumerate(table.index):
        if all(ahead[i:]):
            return int(rows)
    return None


def crossover_summary(curve: pd.DataFrame, metric: str = "score") -> dict | None:
    """Where fine-tuning overtakes prompting, with its uncertainty, as a plain sentence and numbers.

    ``between``: the last size where fine-tuning was not ahead and the first from which it stays ahead (the
    crossover lies somewhere in that range: only these sizes were measured). ``clear``: from that size on,
    every fine-tuning run scored above every prompting run (the seeds' spreads do not overlap).
    """
    rows = crossover(curve, metric)
    if rows is None:
        return None
    sizes = sorted(int(n) for n in curve["rows"].unique())
    before = max((n for n in sizes if n < rows), default=None)
    spreads = curve.groupby(["rows", "method"])[metric].agg(["min", "max"])
    clear = all(spreads.loc[(n, "fine-tuning"), "min"] > spreads.loc[(n, "prompting"), "max"]
                for n in sizes if n >= rows)
    where = f"between {before} and {rows} labelled rows" if before else f"by {rows} labelled rows (the smallest size)"
    sentence = (f"Fine-tuning overtook prompting {where}; " +
                ("from there every fine-tuning run beat every prompting run." if clear else
                 "the runs' spreads overlap there, so the exact point is uncertain."))
    return {"rows": rows, "between": [before, rows], "clear": clear, "sentence": sentence}
