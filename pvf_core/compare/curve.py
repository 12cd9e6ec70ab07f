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
