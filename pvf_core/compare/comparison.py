"""A comparison: every arm's result on the same test rows and what follows from them (no model needed)."""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .costs import ArmCost, CostModel, arm_costs, break_even_queries
from .curve import crossover, crossover_summary
from .recommend import ArmSummary, Priorities, Recommendation, recommend
from .stats import (
    PairwiseTest,
    compare_pair,
    deciding_metric,
    metric_name,
    metric_value,
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
    search: dict | None = None  # how a searched prompt was found (``SearchResult.to_dict()``)


def latency(result: Any) -> dict:
    """An arm's latency p50/p95 in ms and how it was measured.

    ``one_at_a_time`` is True for results of the harness that times single queries (it also measures the
    model's per-token time, ``ms_per_token``); older results only have the batch time shared out over their
    rows, which is not a latency.
    """
    values = list(getattr(result, "latencies_ms", None) or [])
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "rows": 0, "one_at_a_time": False}
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "rows": len(values),
            "one_at_a_time": bool(getattr(result, "ms_per_token", 0.0))}


def latency_label(info: dict) -> str:
    """How a latency figure was measured, in words."""
    if info["one_at_a_time"]:
        return f"measured one query at a time on {info['rows']} rows"
    return "batch time divided by its rows (an older result: not one query at a time)"


def inference_memory(result: Any) -> tuple[float, bool]:
    """(MB, measured for this arm): ``memory_mb`` where the harness measured it per arm, else the process's peak
    (False: it includes whatever the process did before, such as training)."""
    measured = getattr(result, "memory_mb", None)
    if measured:
        return float(measured), True
    return float(getattr(result, "peak_rss_mb", 0.0) or 0.0), False


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
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # of the deciding metric, 0..1
    deciding_metric: str = ""  # "accuracy" | "macro_f1" | "chrf"; empty in older files (then the task's default)
    label_counts: dict[str, int] = field(default_factory=dict)  # what "unbalanced" was judged on

    @property
    def crossover(self) -> dict | None:
        """Where fine-tuning overtook prompting on the learning curve, with its uncertainty (None without one)."""
        return crossover_summary(pd.DataFrame(self.curve)) if self.curve else None

    @property
    def metric(self) -> str:
        return self.deciding_metric or primary_metric(self.task)

    def result(self, arm: str) -> Any:
        return next(r for r in self.results if r.arm == arm)

    def metrics_table(self) -> pd.DataFrame:
        """One row per arm: the scores (the deciding one with its interval), cost, latency, memory, training."""
        rows = []
        metric = self.metric
        for r, info, cost in zip(self.results, self.arms, self.costs):
            summary = r.summary()
            low, high = self.intervals.get(r.arm, (None, None))
            row = {"arm": r.arm, "kind": info.kind}
            if self.task == "classification":
                row |= {"accuracy": r.metrics["accuracy"], "macro_f1": r.metrics["macro_f1"]}
            else:
                row |= {"chrf": r.metrics["chrf"], "exact_match": r.metrics["exact_match"]}
            row |= {f"{metric}_low": low, f"{metric}_high": high}
            lat = latency(r)
            memory, per_arm = inference_memory(r)
            row |= {"latency_ms_p50": lat["p50"], "latency_ms_p95": lat["p95"], "latency_rows": lat["rows"],
                    "latency_one_at_a_time": lat["one_at_a_time"],
                    "prompt_tokens_per_query": summary["prompt_tokens_per_row"],
                    "computed_tokens_per_query": cost.computed_tokens_per_query, "ms_per_token": cost.ms_per_token,
                    "ms_per_query": cost.ms_per_query, "cost_basis": cost.basis,
                    "peak_memory_mb": memory, "memory_per_arm": per_arm,
                    "train_peak_memory_mb": info.train_peak_rss_mb, "train_seconds": info.train_seconds,
                    "train_rows": info.train_rows, "adapter_mb": info.adapter_mb,
                    "cost_per_1000_queries": cost.cost_per_1000, "monthly_cost": cost.monthly_cost,
                    "training_cost": cost.one_off_cost}
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
        """The same results under other prices, volumes, metric or thresholds (no model needed)."""
        return build_comparison(self.results, self.arms, task=self.task, labels=self.labels, dataset=self.dataset,
                                cost_model=cost_model, priorities=priorities, curve=self.curve, seconds=self.seconds,
                                label_counts=self.label_counts or None)

    def to_dict(self) -> dict:
        arms = [{**r.summary(), **asdict(info), "cost": asdict(cost), "score": metric_value(r, self.metric)}
                for r, info, cost in zip(self.results, self.arms, self.costs)]
        return {"dataset": self.dataset, "task": self.task, "labels": self.labels, "metric": self.metric,
                "label_counts": self.label_counts, "arms": arms,
                "significance": [t.to_dict() for t in self.tests],
                "recommendation": self.recommendation.to_dict(), "break_even_queries": self.break_even,
                "learning_curve": self.curve, "crossover_rows": self.crossover_rows, "crossover": self.crossover,
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
        """Reopen a saved comparison. A file written before the decision rule (no ``recommendation.rule``) is
        rebuilt from its per-row results under today's rule, so what the page shows is what the rule says."""
        import json

        data = json.loads((Path(folder) / "comparison.json").read_text())
        results = [_eval_result(r) for r in data["results"]]
        arms = [ArmInfo(**{k: v for k, v in a.items() if k in _field_names(ArmInfo)}) for a in data["arm_infos"]]
        cost_model = CostModel(**{k: v for k, v in data["cost_model"].items() if k in _field_names(CostModel)})
        priorities = Priorities.from_dict(data.get("priorities"))
        if not data["recommendation"].get("rule"):
            return build_comparison(results, arms, task=data["task"], labels=data["labels"],
                                    dataset=data.get("dataset", ""), cost_model=cost_model, priorities=priorities,
                                    curve=data.get("learning_curve") or [], seconds=data.get("seconds", 0.0))
        return cls(dataset=data["dataset"], task=data["task"], labels=data["labels"], results=results, arms=arms,
                   tests=[PairwiseTest.from_dict(t) for t in data["significance"]],
                   costs=[ArmCost(**{k: v for k, v in a["cost"].items() if k in _field_names(ArmCost)})
                          for a in data["arms"]],
                   cost_model=cost_model, priorities=priorities,
                   recommendation=Recommendation.from_dict(data["recommendation"]),
                   break_even=data["break_even_queries"], curve=data["learning_curve"],
                   crossover_rows=data["crossover_rows"], seconds=data["seconds"],
                   intervals={k: tuple(v) for k, v in data["intervals"].items()},
                   deciding_metric=data.get("metric", ""), label_counts=data.get("label_counts") or {})


def _field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _eval_result(data: dict) -> Any:
    """An ``EvalResult`` from its saved dict; keys this version does not know are left out."""
    from ..evaluate import EvalResult

    return EvalResult(**{k: v for k, v in data.items() if k in _field_names(EvalResult)})


def build_comparison(results: Sequence[Any], arms: Sequence[ArmInfo], *, task: str, labels: Sequence[str],
                     dataset: str = "", cost_model: CostModel | None = None, priorities: Priorities | None = None,
                     curve: Sequence[dict] = (), seconds: float = 0.0, metric: str | None = None,
                     label_counts: dict[str, int] | None = None, samples: int = 1000, seed: int = 0) -> Comparison:
    """Significance, costs, break-even and a recommendation from results on identical rows (no model needed).

    ``metric`` ("auto", "accuracy", "macro_f1", "chrf") overrides ``priorities.metric``. "auto" judges balance
    on ``label_counts`` (label -> rows; pass the whole dataset's, as the health check does) or, without it, on
    the test rows' answers. Bootstrap tests use ``samples`` resamples drawn with ``seed``.
    """
    cost_model, priorities = cost_model or CostModel(), priorities or Priorities()
    if metric is not None:
        priorities = replace(priorities, metric=metric)
    if len(results) < 2:
        raise ValueError("a comparison needs at least two arms")
    counts = dict(label_counts) if label_counts else (
        {str(k): int(v) for k, v in pd.Series(list(results[0].references)).value_counts().items()}
        if task == "classification" else {})
    deciding = deciding_metric(task, counts, priorities.metric)
    tests = [_pair(a, b, task, deciding, tuple(labels), samples, seed) for i, a in enumerate(results)
             for b in results[i + 1:]]
    costs = arm_costs(results, [info.train_seconds for info in arms], cost_model)
    summaries = [ArmSummary(r.arm, info.kind, metric_value(r, deciding), cost.ms_per_query, cost)
                 for r, info, cost in zip(results, arms, costs)]
    break_even = _break_even(summaries)
    curve_frame = pd.DataFrame(list(curve))
    crossover_rows = crossover(curve_frame) if len(curve_frame) else None
    n_train = max((a.train_rows for a in arms), default=0) or None
    recommendation = recommend(summaries, {(t.a, t.b): t for t in tests}, priorities, metric=deciding,
                               break_even=break_even, crossover_rows=crossover_rows,
                               n_train=n_train if len(curve_frame) else None,
                               horizon_queries=cost_model.queries_per_month * cost_model.months,
                               rows=len(results[0].references))
    recommendation.rule["metric_reason"] = metric_reason(task, counts, priorities.metric, deciding)
    if task != "classification":
        winner = next(r for r in results if r.arm == recommendation.arm)
        recommendation.reasons.insert(0, unchanged_input_sentence(winner))
    return Comparison(dataset=dataset, task=task, labels=list(labels), results=list(results), arms=list(arms),
                      tests=tests, costs=costs, cost_model=cost_model, priorities=priorities,
                      recommendation=recommendation, break_even=break_even, curve=list(curve),
                      crossover_rows=crossover_rows, seconds=seconds,
                      intervals=_intervals(results, task, labels, deciding), deciding_metric=deciding,
                      label_counts=counts)


def metric_reason(task: str, counts: dict[str, int], setting: str, metric: str) -> str:
    """Why the comparison decides on ``metric``, in words."""
    from ..metrics import IMBALANCE_RATIO

    if task != "classification":
        return "chrF, the usual score for text-to-text answers (character overlap with the expected text)."
    if setting not in ("auto", "", None):
        return f"{metric_name(metric)}, as you chose."
    if not counts:
        return f"{metric_name(metric)}: the balance of the answers is not known."
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    common, rare = ordered[0], [kv for kv in ordered if kv[1] > 0][-1]
    ratio = common[1] / max(rare[1], 1)
    if metric == "macro_f1":
        return (f"macro-F1, because the answers are unbalanced: '{common[0]}' is {ratio:.1f}× as common as "
                f"'{rare[0]}' (the health check calls {IMBALANCE_RATIO}× or more unbalanced). Macro-F1 counts "
                "every answer alike, so an arm cannot score well by mostly giving the common one.")
    return (f"accuracy, because the answers are balanced enough: '{common[0]}' is {ratio:.1f}× as common as "
            f"'{rare[0]}' (below the health check's {IMBALANCE_RATIO}×).")


def _pair(a: Any, b: Any, task: str, metric: str, labels: tuple, samples: int, seed: int) -> PairwiseTest:
    """``compare_pair``, cached on the rows' content: changing a threshold on the page re-tests nothing."""
    return copy.deepcopy(_cached_pair(a.arm, b.arm, tuple(a.references), tuple(a.predictions), tuple(b.references),
                                      tuple(b.predictions), task, metric, labels, samples, seed))


@functools.lru_cache(maxsize=64)
def _cached_pair(arm_a: str, arm_b: str, refs_a: tuple, preds_a: tuple, refs_b: tuple, preds_b: tuple, task: str,
                 metric: str, labels: tuple, samples: int, seed: int) -> PairwiseTest:
    from types import SimpleNamespace

    a = SimpleNamespace(arm=arm_a, references=refs_a, predictions=preds_a)
    b = SimpleNamespace(arm=arm_b, references=refs_b, predictions=preds_b)
    return compare_pair(a, b, task, metric=metric, labels=list(labels) or None, samples=samples, seed=seed)


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
        return f"{result.arm} beats {UNCHANGED}: {mine} against {theirs} ({test.p_words()})."
    verdict = "scores worse than" if test.significant else "does not measurably beat"
    return (f"{CAUTION}{result.arm} {verdict} {UNCHANGED} ({mine} against {theirs}, {test.p_words()}), "
            "so it is not shown to improve the texts; look at the rows before using it.")


@functools.lru_cache(maxsize=16)
def _unchanged_input_test(references: tuple, texts: tuple, predictions: tuple) -> PairwiseTest:
    """Cached: re-weighting priorities on the page rebuilds the recommendation, not this bootstrap."""
    from types import SimpleNamespace

    copy = SimpleNamespace(arm=UNCHANGED, references=references, predictions=texts)
    return compare_pair(copy, SimpleNamespace(arm="arm", references=references, predictions=predictions),
                        "text-to-text")


def _break_even(summaries: Sequence[ArmSummary]) -> float | None:
    """Queries after which the best fine-tuned arm's training is paid back by cheaper queries than the best
    prompt arm's; None when they cost the same per query within the noise, or it is not cheaper."""
    prompts = [s for s in summaries if s.kind == "prompt"]
    tuned = [s for s in summaries if s.kind == "finetune"]
    if not prompts or not tuned:
        return None
    best_prompt = max(prompts, key=lambda s: s.score)
    best_tuned = max(tuned, key=lambda s: s.score)
    return break_even_queries(best_prompt.cost, best_tuned.cost)


def _intervals(results: Sequence[Any], task: str, labels: Sequence[str],
               metric: str | None = None) -> dict[str, tuple[float, float]]:
    """95% interval of each arm's deciding metric (Wilson for accuracy, bootstrap for macro-F1 and chrF)."""
    metric = metric or primary_metric(task)
    out = {}
    for r in results:
        if metric == "accuracy":
            out[r.arm] = wilson_interval(sum(p == t for p, t in zip(r.predictions, r.references)), r.n_test)
        elif metric == "macro_f1":
            out[r.arm] = _macro_f1_interval(tuple(r.references), tuple(r.predictions), tuple(labels))
        else:
            value, half = r.metrics["chrf"] / 100, _bootstrap_half_width(r)
            out[r.arm] = (max(0.0, value - half), min(1.0, value + half))
    return out


@functools.lru_cache(maxsize=64)
def _macro_f1_interval(references: tuple, predictions: tuple, labels: tuple, samples: int = 1000,
                       seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% interval of one arm's macro-F1 (the labels that occur, as its reported macro-F1)."""
    from .stats import _macro_f1_rows

    seen = set(references) | set(predictions)
    used = [label for label in labels if label in seen] or sorted(seen)
    codes = {label: i for i, label in enumerate(used)}
    refs = np.array([codes.get(x, len(used)) for x in references])
    preds = np.array([codes.get(x, len(used)) for x in predictions])
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, len(refs), len(refs)) for _ in range(samples)])
    low, high = np.percentile(_macro_f1_rows(refs[idx], preds[idx], len(used)), [2.5, 97.5])
    return float(low), float(high)


def _bootstrap_half_width(result: Any, samples: int = 1000, seed: int = 0) -> float:
    from ..metrics import chrf_of_rows, chrf_statistics

    stats = chrf_statistics(result.references, result.predictions)
    values = resampled(len(stats), lambda idx: chrf_of_rows(stats[idx]) / 100, samples, seed)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(high - low) / 2
