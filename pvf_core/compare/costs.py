"""What an arm costs: per query, once (training), per month, and the volume where two arms break even."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

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


COST_NOISE = 0.10
"""Per-query costs closer than this (relative) count as the same. A cost per query is computed tokens (a mean over
the test rows; deployed texts differ) times a per-token time (one measurement, which moves a few percent between
runs on a shared machine). Arms on one base model share the per-token time, so only this floor separates them;
arms on different models also add their per-token times' relative spread (``ArmCost.spread``)."""


@dataclass
class ArmCost:
    arm: str
    ms_per_query: float  # computed tokens per query x the model's per-token time (or the measured time, see basis)
    one_off_seconds: float  # training time already spent (shown; not a cost of choosing a finished arm)
    cost_per_1000: float
    one_off_cost: float
    monthly_cost: float
    computed_tokens_per_query: float | None = None  # after the shared-prefix cache
    ms_per_token: float | None = None  # the base model's, measured once in the run
    runs_on: str = ""  # the base model (a merged adapter costs what its base model costs)
    spread: float = 0.0  # relative spread of the per-token time measured for this model
    basis: str = "measured time"  # "computed tokens" or, for results without token counts, "measured time"
    running_monthly_cost: float | None = None  # queries only, without the training spread over the months


def arm_cost(arm: str, ms_per_query: float, one_off_seconds: float, model: CostModel, **details) -> ArmCost:
    """Cost per 1,000 queries, one-off cost and monthly cost (running + training spread over the months).

    ``details`` fills the other ``ArmCost`` fields (computed tokens, per-token time, base model, spread, basis).
    """
    per_hour = model.price_per_hour
    cost_per_1000 = ms_per_query * 1000 / 3_600_000 * per_hour
    one_off = one_off_seconds / 3600 * per_hour
    monthly = cost_per_1000 * model.queries_per_month / 1000 + one_off / model.months
    return ArmCost(arm, ms_per_query, one_off_seconds, cost_per_1000, one_off, monthly,
                   **{"running_monthly_cost": cost_per_1000 * model.queries_per_month / 1000} | details)


def base_model(result: Any) -> str:
    """The model an arm runs on, without its adapter: the result's ``base_model``, or its model's name before
    " + " ("SmolLM2 + adapter" -> "SmolLM2") in older results."""
    return str(getattr(result, "base_model", "") or "") or str(getattr(result, "model", "") or "").split(" + ")[0]


def per_token_times(results: Sequence[Any]) -> dict[str, tuple[float, float]]:
    """Per base model: (ms per computed token, relative spread), one figure for every arm of that model.

    Each result's ``ms_per_token`` (measured once for the model in the run) where it has one; otherwise its
    evaluation time divided by its computed tokens. The model's figure is the median over its arms; the
    spread is half their range over that median (0 when they agree, as one measurement per model does).
    """
    by_model: dict[str, list[float]] = {}
    for r in results:
        tokens = float(getattr(r, "computed_tokens_per_row", 0.0) or 0.0)
        per_token = getattr(r, "ms_per_token", None)
        if not per_token and tokens > 0:
            per_token = r.ms_per_example / tokens
        if per_token and per_token > 0:
            by_model.setdefault(base_model(r), []).append(float(per_token))
    out = {}
    for name, values in by_model.items():
        median = float(np.median(values))
        out[name] = (median, float((max(values) - min(values)) / (2 * median)) if median > 0 else 0.0)
    return out


def arm_costs(results: Sequence[Any], one_off_seconds: Sequence[float], model: CostModel) -> list[ArmCost]:
    """Each arm's cost from its computed tokens per query times its base model's per-token time.

    Arms with the same base model and the same computed tokens cost exactly the same, whatever their wall
    clock said. A result without token counts (older files) keeps its measured time per query.
    """
    times = per_token_times(results)
    costs = []
    for r, seconds in zip(results, one_off_seconds):
        tokens = float(getattr(r, "computed_tokens_per_row", 0.0) or 0.0)
        name = base_model(r)
        if tokens > 0 and name in times:
            per_token, spread = times[name]
            costs.append(arm_cost(r.arm, tokens * per_token, seconds, model, computed_tokens_per_query=tokens,
                                  ms_per_token=per_token, runs_on=name, spread=spread, basis="computed tokens"))
        else:
            costs.append(arm_cost(r.arm, float(r.ms_per_example), seconds, model, runs_on=name))
    return costs


def cost_noise(a: ArmCost, b: ArmCost) -> float:
    """The relative difference below which two arms "cost the same per query" (see ``COST_NOISE``)."""
    if a.basis != "computed tokens" or b.basis != "computed tokens":
        return max(COST_NOISE, 0.5)  # wall-clock times per query: only a large difference is more than noise
    return COST_NOISE if a.runs_on == b.runs_on else COST_NOISE + a.spread + b.spread


def same_cost(a: ArmCost, b: ArmCost) -> bool:
    """Whether two arms' per-query costs are within the measurement's noise of each other."""
    low, high = sorted((a.cost_per_1000, b.cost_per_1000))
    if high <= 0:
        return True
    return (high - low) <= cost_noise(a, b) * max(low, 1e-300)


def break_even_queries(cheap_start: ArmCost, cheap_run: ArmCost) -> float | None:
    """Queries after which ``cheap_run`` (higher one-off, cheaper per query) costs less in total.

    None when it never does: it is not cheaper per query, or the two cost the same per query within the
    measurement's noise (``same_cost``).
    """
    saving_per_query = (cheap_start.cost_per_1000 - cheap_run.cost_per_1000) / 1000
    extra_one_off = cheap_run.one_off_cost - cheap_start.one_off_cost
    if saving_per_query <= 0 or same_cost(cheap_start, cheap_run):
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
