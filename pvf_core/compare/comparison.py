"""A comparison: every arm's result on the same test rows and what follows from them (no model needed)."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .costs import ArmCost, CostModel, arm_cost, break_even_queries
from .curve import crossover
from .recommend import ArmSummary, Priorities, Recommendation, recommend
from .stats import (
    PairwiseTest,
    compare_pair,
    p_text,
    primary_metric,
    resampled,
    score_text,
    wilson_interval,
)

# -- disagreements and groups -----------------------------------------------------------------------------

def disagreements(results: Sequence[Any]) -> pd.DataFrame:
    """The test rows where the arms do not all give the same answer, with every arm's answer and the truth."""
    first = results[0]
    frame = pd.DataFrame({"text": first.texts, "expected": first.references})
    for r in results:
        frame[r.arm] = r.predictions
    answers = frame[[r.arm for r in results]]
    mask = answers.nunique(axis=1) > 1
    out = frame[mask].copy()
    out["right"] = [", ".join(r.arm for r in results if row[r.arm] == row["expected"]) or "none"
                    for _, row in out.iterrows()]
    return out.reset_index(names="row")


def group_gaps(result: Any, groups: Sequence[str]) -> pd.DataFrame:
    """Accuracy of one arm per value of a group column (e.g. language, region), to spot unfair gaps."""
    frame = pd.DataFrame({"group": list(groups), "right": [p == r for p, r in zip(result.predictions, result.references)]})
    table = frame.groupby("group")["right"].agg(["mean", "count"]).reset_index()
    table.columns = ["group", "accuracy", "rows"]
    table["gap_to_overall"] = table["accuracy"] - frame["right"].mean()
    return table.sort_values("accuracy")


# -- a whole comparison -----------------------------------------------------------------------------------

@dataclass
class ArmInfo:
    """What an arm cost before its first query."""

    name: str
    kind: str  # "prompt" | "finetune"
    train_seconds: float = 0.0
    train_rows: int = 0
    train_peak_rss_mb: float = 0.0
    adapter_mb: float = 0.0
    adapter_dir: str | None = None


@dataclass
class Comparison:
    """Every arm's result on the same test rows, and what follows from them."""

    dataset: str
    task: str
    labels: list[str]
    results: list[Any]  # EvalResult
    arms: list[ArmInfo]
    tests: list[PairwiseTest]
    costs: list[ArmCost]
    cost_model: CostModel
    priorities: Priorities
    recommendation: Recommendation
    break_even: float | None = None
    curve: list[dict] = field(default_factory=list)
    crossover_rows: int | None = None
    seconds: float = 0.0
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return primary_metric(self.task)

    def result(self, arm: str) -> Any:
        return next(r for r in self.results if r.arm == arm)

    def metrics_table(self) -> pd.DataFrame:
        """One row per arm: quality with its interval, latency, memory, tokens, training cost."""
        rows = []
        for r, info, cost in zip(self.results, self.arms, self.costs):
            summary = r.summary()
            low, high = self.intervals.get(r.arm, (None, None))
            row = {"arm": r.arm, "kind": info.kind}
            if self.task == "classification":
                row |= {"accuracy": r.metrics["accuracy"], "accuracy_low": low, "accuracy_high": high,
                        "macro_f1": r.metrics["macro_f1"]}
            else:
                row |= {"chrf": r.metrics["chrf"], "chrf_low": low, "chrf_high": high,
                        "exact_match": r.metrics["exact_match"]}
            row |= {"latency_ms_p50": summary["latency_ms_p50"], "latency_ms_p95": summary["latency_ms_p95"],
                    "prompt_tokens_per_query": summary["prompt_tokens_per_row"],
                    "peak_memory_mb": summary["peak_rss_mb"], "train_seconds": info.train_seconds,
                    "train_rows": info.train_rows, "adapter_mb": info.adapter_mb,
                    "cost_per_1000_queries": cost.cost_per_1000, "monthly_cost": cost.monthly_cost}
            rows.append(row)
        return pd.DataFrame(rows)

    def predictions_frame(self) -> pd.DataFrame:
        """One row per test row: the text, the expected answer and ``prediction_<arm>`` for each arm."""
        first = self.results[0]
        names = ("input", "output") if self.task != "classification" else ("text", "label")
        frame = pd.DataFrame({names[0]: first.texts, names[1]: first.references})
        for r in self.results:
            frame[f"prediction_{r.arm}"] = r.predictions
        return frame

    def reweighted(self, cost_model: CostModel, priorities: Priorities) -> "Comparison":
        """The same results under other prices, volumes or priorities (no model needed)."""
        return build_comparison(self.results, self.arms, task=self.task, labels=self.labels, dataset=self.dataset,
                                cost_model=cost_model, priorities=priorities, curve=self.curve, seconds=self.seconds)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "task": self.task, "labels": self.labels, "metric": self.metric,
                "arms": [{**r.summary(), **asdict(info), "cost": asdict(cost)}
                         for r, info, cost in zip(self.results, self.arms, self.costs)],
                "significance": [t.to_dict() for t in self.tests],
                "recommendation": self.recommendation.to_dict(), "break_even_queries": self.break_even,
                "learning_curve": self.curve, "crossover_rows": self.crossover_rows,
                "cost_model": asdict(self.cost_model), "priorities": asdict(self.priorities),
                "intervals": self.intervals, "seconds": round(self.seconds, 2)} | (
                    {} if self.task == "classification" else
                    {"unchanged_input": unchanged_input_metrics(self.results[0])})

    def save(self, folder: str | Path) -> Path:
        """Write comparison.json (with every per-row result) so the page can reopen it."""
        import json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = self.to_dict() | {"results": [r.to_dict() for r in self.results],
                                  "arm_infos": [asdict(a) for a in self.arms]}
        (folder / "comparison.json").write_text(json.dumps(data, default=float))
        return folder / "comparison.json"

    @classmethod
    def load(cls, folder: str | Path) -> "Comparison":
        import json

        from ..evaluate import EvalResult

        data = json.loads((Path(folder) / "comparison.json").read_text())
        return cls(dataset=data["dataset"], task=data["task"], labels=data["labels"],
                   results=[EvalResult(**r) for r in data["results"]],
                   arms=[ArmInfo(**a) for a in data["arm_infos"]],
                   tests=[PairwiseTest(**{k: t[k] for k in ("a", "b", "metric", "difference", "p_value", "test",
                                                            "low", "high", "details")})
                          for t in data["significance"]],
                   costs=[ArmCost(**a["cost"]) for a in data["arms"]],
                   cost_model=CostModel(**data["cost_model"]), priorities=Priorities(**data["priorities"]),
                   recommendation=Recommendation(**data["recommendation"]), break_even=data["break_even_queries"],
                   curve=data["learning_curve"], crossover_rows=data["crossover_rows"], seconds=data["seconds"],
                   intervals={k: tuple(v) for k, v in data["intervals"].items()})


def build_comparison(results: Sequence[Any], arms: Sequence[ArmInfo], *, task: str, labels: Sequence[str],
                     dataset: str = "", cost_model: CostModel | None = None, priorities: Priorities | None = None,
                     curve: Sequence[dict] = (), seconds: float = 0.0) -> Comparison:
    """Significance, costs, break-even and a recommendation from results on identical rows (no model needed)."""
    cost_model, priorities = cost_model or CostModel(), priorities or Priorities()
    if len(results) < 2:
        raise ValueError("a comparison needs at least two arms")
    tests = [compare_pair(a, b, task) for i, a in enumerate(results) for b in results[i + 1:]]
    costs = [arm_cost(r.arm, r.ms_per_example, info.train_seconds, cost_model) for r, info in zip(results, arms)]
    metric = primary_metric(task)
    summaries = [ArmSummary(r.arm, info.kind, r.metrics[metric] / (100 if metric == "chrf" else 1),
                            r.ms_per_example, cost) for r, info, cost in zip(results, arms, costs)]
    break_even = _break_even(summaries)
    curve_frame = pd.DataFrame(list(curve))
    crossover_rows = crossover(curve_frame) if len(curve_frame) else None
    n_train = max((a.train_rows for a in arms), default=0) or None
    recommendation = recommend(summaries, {(t.a, t.b): t for t in tests}, priorities, metric=metric,
                               break_even=break_even, crossover_rows=crossover_rows,
                               n_train=n_train if len(curve_frame) else None)
    if task != "classification":
        winner = next(r for r in results if r.arm == recommendation.arm)
        recommendation.reasons.insert(0, unchanged_input_sentence(winner))
    return Comparison(dataset=dataset, task=task, labels=list(labels), results=list(results), arms=list(arms),
                      tests=tests, costs=costs, cost_model=cost_model, priorities=priorities,
                      recommendation=recommendation, break_even=break_even, curve=list(curve),
                      crossover_rows=crossover_rows, seconds=seconds, intervals=_intervals(results, task, labels))


UNCHANGED = "leaving the text unchanged"
CAUTION = "Careful: "  # a reason starting with this is a warning (the page shows it as one)


def unchanged_input_metrics(result: Any) -> dict:
    """chrF and exact match of answering every row with its own input (text-to-text only)."""
    from ..metrics import text_metrics

    return text_metrics(list(result.references), list(result.texts))


def unchanged_input_sentence(result: Any) -> str:
    """How an arm compares with not changing the text at all: for correction-like tasks that is hard to beat."""
    test = _unchanged_input_test(tuple(result.references), tuple(result.texts), tuple(result.predictions))
    theirs = score_text(unchanged_input_metrics(result)["chrf"] / 100, "chrf")
    mine = score_text(result.metrics["chrf"] / 100, "chrf")
    if test.significant and test.difference > 0:
        return f"It beats {UNCHANGED} ({theirs} against its {mine}, {p_text(test.p_value)})."
    verdict = "scores worse than" if test.significant else "does not measurably beat"
    return (f"{CAUTION}{result.arm} {verdict} {UNCHANGED} ({mine} against {theirs}, {p_text(test.p_value)}), "
            "so it is not shown to improve the texts; look at the rows before using it.")


@functools.lru_cache(maxsize=16)
def _unchanged_input_test(references: tuple, texts: tuple, predictions: tuple) -> PairwiseTest:
    """Cached: re-weighting priorities on the page rebuilds the recommendation, not this bootstrap."""
    from types import SimpleNamespace

    copy = SimpleNamespace(arm=UNCHANGED, references=references, predictions=texts)
    return compare_pair(copy, SimpleNamespace(arm="arm", references=references, predictions=predictions),
                        "text-to-text")


def _break_even(summaries: Sequence[ArmSummary]) -> float | None:
    """Queries after which the best fine-tuned arm costs less than the best prompt arm."""
    prompts = [s for s in summaries if s.kind == "prompt"]
    tuned = [s for s in summaries if s.kind == "finetune"]
    if not prompts or not tuned:
        return None
    best_prompt = max(prompts, key=lambda s: s.score)
    best_tuned = max(tuned, key=lambda s: s.score)
    return break_even_queries(best_prompt.cost, best_tuned.cost)


def _intervals(results: Sequence[Any], task: str, labels: Sequence[str]) -> dict[str, tuple[float, float]]:
    """95% interval of each arm's primary metric (Wilson for accuracy, bootstrap for chrF)."""
    out = {}
    for r in results:
        if task == "classification":
            out[r.arm] = wilson_interval(sum(p == t for p, t in zip(r.predictions, r.references)), r.n_test)
        else:
            value, half = r.metrics["chrf"] / 100, _bootstrap_half_width(r)
            out[r.arm] = (max(0.0, value - half), min(1.0, value + half))
    return out


def _bootstrap_half_width(result: Any, samples: int = 1000, seed: int = 0) -> float:
    from ..metrics import chrf_of_rows, chrf_statistics

    stats = chrf_statistics(result.references, result.predictions)
    values = resampled(len(stats), lambda idx: chrf_of_rows(stats[idx]) / 100, samples, seed)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(high - low) / 2
