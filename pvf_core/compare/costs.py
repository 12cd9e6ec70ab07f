"""What an arm costs: per query, once (training), per month, and the volume where two arms break even."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..settings import check_ranges, setting

# -- costs ----------------------------------------------------------------------------------------------

@dataclass
class CostModel:
    """What compute costs you. Change the defaults to your own prices and traffic."""

    price_per_hour: float = setting(0.10, "Price of one hour of the machine that answers queries and trains, in "
                                    "dollars. A 2-core cloud VM is about $0.05–0.10; a GPU $1–4.", min=0.0, max=100.0)
    queries_per_month: int = setting(100_000, "How many texts the model will process per month in use. Fine-tuning's "
                                     "one-off cost is spread over them.", min=0, max=10**10)
    months: int = setting(12, "How many months the model stays in use: its training cost is shared across them.",
                          min=1, max=120)

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class ArmCost:
    arm: str
    ms_per_query: float
    one_off_seconds: float
    cost_per_1000: float
    one_off_cost: float
    monthly_cost: float


def arm_cost(arm: str, ms_per_query: float, one_off_seconds: float, model: CostModel) -> ArmCost:
    """Cost per 1,000 queries, one-off cost and monthly cost (running + training spread over the months)."""
    per_hour = model.price_per_hour
    cost_per_1000 = ms_per_query * 1000 / 3_600_000 * per_hour
    one_off = one_off_seconds / 3600 * per_hour
    monthly = cost_per_1000 * model.queries_per_month / 1000 + one_off / model.months
    return ArmCost(arm, ms_per_query, one_off_seconds, cost_per_1000, one_off, monthly)


def break_even_queries(cheap_start: ArmCost, cheap_run: ArmCost) -> float | None:
    """Queries after which ``cheap_run`` (higher one-off, cheaper per query) costs less in total.

    None when it never does (it is not cheaper per query).
    """
    saving_per_query = (cheap_start.cost_per_1000 - cheap_run.cost_per_1000) / 1000
    extra_one_off = cheap_run.one_off_cost - cheap_start.one_off_cost
    if saving_per_query <= 0:
        return None
    return max(0.0, extra_one_off / saving_per_query)


def cost_curve(costs: Sequence[ArmCost], max_queries: int, points: int = 50) -> pd.DataFrame:
    """Total cost of each arm against the number of queries served (for the cost-versus-volume chart)."""
    volumes = np.linspace(0, max_queries, points)
    rows = [{"arm": c.arm, "queries": float(q), "total_cost": c.one_off_cost + c.cost_per_1000 * q / 1000}
            for c in costs for q in volumes]
    return pd.DataFrame(rows)


def _money(dollars: float) -> str:
    """Dollars with as many decimals as a small amount needs: $12.30, $0.0042."""
    return f"${dollars:,.2f}" if dollars >= 0.1 or dollars == 0 else f"${dollars:.2g}"
