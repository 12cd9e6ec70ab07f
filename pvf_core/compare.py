"""Put arms side by side: paired significance, costs, break-even, learning curves, a recommendation.

Everything here works on what the harness returns (``EvalResult``-like objects with ``arm``,
``references``, ``predictions``, ``metrics``, ``ms_per_example``...), so a comparison of prompt versions
and fine-tuned runs is one code path. The functions are pure and small so each can be tested against
known values; ``run_comparison`` strings them together.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .settings import check_ranges, setting

ALPHA = 0.05


# -- significance ---------------------------------------------------------------------------------------

def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[int, int, float]:
    """Exact McNemar test on paired right/wrong outcomes.

    Returns (rows only A got right, rows only B got right, two-sided p-value). Only the discordant rows
    carry information; under "no difference" each is A's or B's with probability 1/2.
    """
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap(metric: Callable[[Sequence[str], Sequence[str]], float], references: Sequence[str],
                     predictions_a: Sequence[str], predictions_b: Sequence[str], *, samples: int = 1000,
                     seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of ``metric(B) - metric(A)``: the difference, a 95% interval and a two-sided p-value.

    The same resampled rows are scored for both arms, so row difficulty cancels out.
    """
    refs, pa, pb = np.asarray(references, object), np.asarray(predictions_a, object), np.asarray(predictions_b, object)
    observed = metric(refs, pb) - metric(refs, pa)
    diffs = resampled(len(refs), lambda idx: metric(refs[idx], pb[idx]) - metric(refs[idx], pa[idx]), samples, seed)
    return _bootstrap_summary(observed, diffs)


def paired_bootstrap_chrf(references: Sequence[str], predictions_a: Sequence[str], predictions_b: Sequence[str], *,
                          samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """``paired_bootstrap`` of chrF (0-1), the same resamples, from per-row statistics (hundreds of times faster)."""
    from .metrics import chrf_of_rows, chrf_statistics

    stats_a, stats_b = chrf_statistics(references, predictions_a), chrf_statistics(references, predictions_b)
    observed = (chrf_of_rows(stats_b) - chrf_of_rows(stats_a)) / 100
    diffs = resampled(len(stats_a), lambda idx: (chrf_of_rows(stats_b[idx]) - chrf_of_rows(stats_a[idx])) / 100,
                      samples, seed)
    return _bootstrap_summary(observed, diffs)


def resampled(rows: int, statistic: Callable[[np.ndarray], float], samples: int = 1000, seed: int = 0) -> np.ndarray:
    """``statistic(idx)`` for ``samples`` bootstrap draws of ``rows`` row indices (with replacement, seeded)."""
    rng = np.random.default_rng(seed)
    return np.array([statistic(rng.integers(0, rows, rows)) for _ in range(samples)], dtype=float)


def _bootstrap_summary(observed: float, diffs: np.ndarray) -> dict[str, float]:
    low, high = np.percentile(diffs, [2.5, 97.5])
    # p-value: how often the resampled difference falls on the other side of zero (doubled, capped at 1).
    p = min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean()))
    return {"difference": float(observed), "low": float(low), "high": float(high), "p_value": float(p)}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a proportion (accuracy) that behaves at 0 and 1."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class PairwiseTest:
    """Is arm ``b`` better or worse than arm ``a`` on the same rows, beyond luck?"""

    a: str
    b: str
    metric: str
    difference: float  # b - a, in metric units (0..1 for accuracy)
    p_value: float
    test: str
    low: float | None = None
    high: float | None = None
    details: dict = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def sentence(self) -> str:
        points = abs(self.difference) * 100
        if points < 0.05:
            return f"{self.a} and {self.b} score the same {self.metric}."
        better, worse = (self.b, self.a) if self.difference > 0 else (self.a, self.b)
        verdict = ("this is unlikely to be luck" if self.significant else
                   "this could easily be luck: the test set cannot tell them apart")
        return f"{better} is better than {worse} by {points:.1f} points of {self.metric}; {verdict} ({p_text(self.p_value)})."

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant, "sentence": self.sentence()}


def primary_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "chrf"


def compare_pair(a: Any, b: Any, task: str, *, samples: int = 1000, seed: int = 0) -> PairwiseTest:
    """Paired test of two results on identical rows: exact McNemar for accuracy, bootstrap for chrF."""
    if list(a.references) != list(b.references):
        raise ValueError(f"{a.arm} and {b.arm} were not evaluated on the same rows")
    if task == "classification":
        ra = [p == r for p, r in zip(a.predictions, a.references)]
        rb = [p == r for p, r in zip(b.predictions, b.references)]
        only_a, only_b, p = mcnemar_exact(ra, rb)
        diff = (sum(rb) - sum(ra)) / max(len(ra), 1)
        return PairwiseTest(a.arm, b.arm, "accuracy", diff, p, "exact McNemar",
                            details={"only_a_right": only_a, "only_b_right": only_b})
    boot = paired_bootstrap_chrf(a.references, a.predictions, b.predictions, samples=samples, seed=seed)
    return PairwiseTest(a.arm, b.arm, "chrF", boot["difference"], boot["p_value"], "paired bootstrap",
                        low=boot["low"], high=boot["high"])


def macro_f1_interval(result: Any, labels: Sequence[str], *, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% interval of one arm's macro-F1."""
    from sklearn.metrics import f1_score

    refs, preds = np.asarray(result.references, object), np.asarray(result.predictions, object)
    values = resampled(len(refs), lambda idx: f1_score(refs[idx], preds[idx], labels=list(labels), average="macro",
                                                       zero_division=0), samples, seed)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


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


# -- recommendation -------------------------------------------------------------------------------------

@dataclass
class Priorities:
    """How much each criterion matters to you (0 = not at all, 5 = most)."""

    quality: float = setting(3.0, "How much a better score matters. Only differences the test set can confirm count.",
                             min=0, max=5)
    speed: float = setting(1.0, "How much answer latency matters (milliseconds per text).", min=0, max=5)
    cost: float = setting(1.0, "How much money matters: running cost at your query volume plus training cost.",
                          min=0, max=5)
    effort: float = setting(1.0, "How much you want to avoid collecting labelled rows and training a model.",
                            min=0, max=5)

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class ArmSummary:
    """What the recommendation needs to know about one arm."""

    arm: str
    kind: str  # "prompt" or "finetune"
    score: float  # primary metric, 0..1
    ms_per_query: float
    cost: ArmCost


@dataclass
class Recommendation:
    arm: str
    reasons: list[str]
    what_would_change: list[str]
    scores: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def tied_with_best(summaries: Sequence[ArmSummary], tests: dict[tuple[str, str], PairwiseTest]) -> set[str]:
    """Arms whose score the test set cannot tell apart from the best arm's."""
    best = max(summaries, key=lambda s: s.score)
    tied = {best.arm}
    for s in summaries:
        test = tests.get((best.arm, s.arm)) or tests.get((s.arm, best.arm))
        if s.arm != best.arm and test is not None and not test.significant:
            tied.add(s.arm)
    return tied


def recommend(summaries: Sequence[ArmSummary], tests: dict[tuple[str, str], PairwiseTest],
              priorities: Priorities = Priorities(), *, metric: str = "accuracy",
              break_even: float | None = None, crossover_rows: int | None = None,
              n_train: int | None = None) -> Recommendation:
    """Pick the arm with the best weighted score; a difference within noise never counts as quality."""
    tied = tied_with_best(summaries, tests)
    top, low = max(s.score for s in summaries), min(s.score for s in summaries)
    fastest = min(s.ms_per_query for s in summaries)
    cheapest = min(s.cost.monthly_cost for s in summaries) or 1e-12

    def weighted(s: ArmSummary) -> float:
        quality = 1.0 if s.arm in tied else 1 - (top - s.score) / max(top - low, 1e-9)
        speed = fastest / max(s.ms_per_query, 1e-9)
        cost = cheapest / max(s.cost.monthly_cost, 1e-12)
        effort = 1.0 if s.kind == "prompt" else 0.3
        return (priorities.quality * quality + priorities.speed * speed + priorities.cost * cost
                + priorities.effort * effort)

    scores = {s.arm: round(weighted(s), 3) for s in summaries}
    # ties in the weighted score go to the cheaper arm
    winner = max(summaries, key=lambda s: (scores[s.arm], -s.cost.monthly_cost))
    reasons = _reasons(winner, summaries, tests, tied, metric)
    changes = _what_would_change(winner, summaries, break_even, crossover_rows, n_train)
    return Recommendation(winner.arm, reasons, changes, scores)


def p_text(p_value: float) -> str:
    """'p = 0.032', or 'p < 0.001' where three decimals would read as an impossible zero."""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def score_text(score: float, metric: str, *, named: bool = True) -> str:
    """A score as people read it: '78.0% accuracy', or 'chrF 80.0' (chrF is not a percentage)."""
    if metric.lower() == "chrf":
        return f"chrF {score * 100:.1f}" if named else f"{score * 100:.1f}"
    return f"{score:.1%} {metric}" if named else f"{score:.1%}"


def _reasons(winner: ArmSummary, summaries: Sequence[ArmSummary], tests: dict, tied: set[str],
             metric: str) -> list[str]:
    reasons = []
    mine = score_text(winner.score, metric, named=False)
    for other in summaries:
        if other.arm == winner.arm:
            continue
        test = tests.get((other.arm, winner.arm)) or tests.get((winner.arm, other.arm))
        gap = (winner.score - other.score) * 100
        theirs = score_text(other.score, metric, named=False)
        if test is not None and test.significant and gap > 0:
            reasons.append(f"It scores {score_text(winner.score, metric)} against {theirs} for {other.arm} "
                           f"(+{gap:.1f} points, {p_text(test.p_value)}: unlikely to be luck).")
        elif (other.arm in tied and winner.arm in tied) or (test is not None and not test.significant):
            reasons.append(f"{other.arm} scores {theirs} against its {mine}: a difference "
                           f"the test set cannot confirm, so speed, cost and effort decide.")
        else:
            reasons.append(f"{other.arm} scores {theirs} against its {mine}, but "
                           f"{winner.arm} wins on your priorities (speed, cost, effort).")
    slowest = max(summaries, key=lambda s: s.ms_per_query)
    if winner.ms_per_query < slowest.ms_per_query and slowest.arm != winner.arm:
        reasons.append(f"It answers in {winner.ms_per_query:.0f} ms per text against {slowest.ms_per_query:.0f} ms "
                       f"for {slowest.arm}.")
    reasons.append(f"At your volume it costs {_money(winner.cost.monthly_cost)} a month "
                   f"({_money(winner.cost.cost_per_1000)} per 1,000 texts"
                   + (f", plus {_money(winner.cost.one_off_cost)} of training once)." if winner.cost.one_off_cost
                      else ")."))
    return reasons


def _money(dollars: float) -> str:
    """Dollars with as many decimals as a small amount needs: $12.30, $0.0042."""
    return f"${dollars:,.2f}" if dollars >= 0.1 or dollars == 0 else f"${dollars:.2g}"


def _what_would_change(winner: ArmSummary, summaries: Sequence[ArmSummary], break_even: float | None,
                       crossover_rows: int | None, n_train: int | None) -> list[str]:
    changes = []
    if break_even is not None:
        changes.append(f"Fine-tuning's training cost is paid back after about {break_even:,.0f} queries; "
                       "below that volume prompting is cheaper.")
    if crossover_rows is not None:
        changes.append(f"On your data fine-tuning overtook prompting from about {crossover_rows} labelled rows.")
    elif n_train is not None:
        changes.append(f"Within your {n_train} labelled rows fine-tuning did not overtake prompting for good; "
                       "more rows might change that.")
    if winner.kind == "prompt":
        changes.append("More labelled rows, or a task the model does not know from general text, favour fine-tuning.")
    else:
        changes.append("If the task changes often, or you have few labelled rows, prompting is easier to keep up.")
    return changes


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

        from .evaluate import EvalResult

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
    from .metrics import text_metrics

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
    from .metrics import chrf_of_rows, chrf_statistics

    stats = chrf_statistics(result.references, result.predictions)
    values = resampled(len(stats), lambda idx: chrf_of_rows(stats[idx]) / 100, samples, seed)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(high - low) / 2


# -- running the standard comparison ------------------------------------------------------------------------

Progress = Callable[[int, int, str], None]


class _Stages:
    """Turns each step's own progress into one overall percentage (steps weighted by expected work)."""

    def __init__(self, weights: dict[str, float], on_progress: Progress | None) -> None:
        self.weights, self.on_progress = weights, on_progress
        self.total = sum(weights.values())
        self.done_before = 0.0

    def step(self, name: str) -> Progress:
        start, weight = self.done_before, self.weights[name]
        self.done_before += weight

        def report(done: int, total: int, message: str) -> None:
            if self.on_progress:
                overall = start + weight * done / max(total, 1)
                self.on_progress(int(overall * 1000 / self.total), 1000, f"{name}: {message}")
        return report


def run_comparison(splits: Any, *, model: str = "bundled", shots: Sequence[int] = (0, 4), max_train: int | None = None,
                   limit: int | None = None, seed: int = 0, lora: Any = None, learning_curve: bool = False,
                   output_dir: str | Path | None = None, cost_model: CostModel | None = None,
                   priorities: Priorities | None = None, dataset: str = "", instruction: str = "",
                   on_progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> Comparison:
    """The standard comparison: k-shot prompts and a LoRA fine-tune, all on the same test rows.

    ``max_train`` and ``limit`` take the first rows of the train and test splits, as given.
    """
    import time

    from .evaluate import Arm, evaluate
    from .finetune import LoraSettings, train_lora
    from .models import load_model
    from .prompting import PromptSpec, default_selection
    from .store import workspace_dir

    started = time.perf_counter()
    test = splits.test.head(limit) if limit else splits.test
    train = splits.train.head(max_train) if max_train else splits.train
    lora = lora or LoraSettings(seed=seed)
    output_dir = Path(output_dir) if output_dir else workspace_dir("runs", f"compare-{int(time.time())}")
    base_spec = PromptSpec(task=splits.task, instruction=instruction, labels=list(splits.labels), seed=seed)
    n_eval = len(test) * (len(shots) + 1)
    weights = {"prompting": float(n_eval - len(test)), "fine-tuning": float(len(train) * lora.epochs * 1.5),
               "scoring the fine-tuned model": float(len(test))}
    if learning_curve:
        weights["learning curve"] = float(sum(learning_curve_sizes(len(train))[:-1]) * lora.epochs * 2)
    stages = _Stages(weights, on_progress)
    loaded = load_model(model)
    prompting = stages.step("prompting")
    results, infos = [], []
    for i, k in enumerate(shots):
        spec = base_spec.with_(shots=int(k), selection=default_selection(int(k), len(splits.labels))[0])
        arm = Arm(name=spec.name(), prompt=spec, model=model)
        results.append(evaluate(arm, test, task=splits.task, labels=splits.labels or None, train=train, loaded=loaded,
                                should_stop=should_stop,
                                on_progress=lambda d, t, m, i=i: prompting(i * t + d, len(shots) * t, m)))
        infos.append(ArmInfo(arm.name, "prompt"))
    tuned_splits = type(splits)(train=train, validation=splits.validation, test=test, task=splits.task)
    trained = train_lora(lora, tuned_splits, model_name=model, output_dir=output_dir / "adapter",
                         on_progress=_train_progress(stages.step("fine-tuning")), should_stop=should_stop)
    name = f"LoRA r={lora.rank}"
    tuned_arm = Arm(name=name, prompt=base_spec, model=model, adapter=str(trained.adapter_dir))
    results.append(evaluate(tuned_arm, test, task=splits.task, labels=splits.labels or None,
                            on_progress=stages.step("scoring the fine-tuned model"), should_stop=should_stop))
    infos.append(ArmInfo(name, "finetune", train_seconds=trained.train_seconds, train_rows=len(train),
                         train_peak_rss_mb=trained.peak_rss_mb, adapter_mb=trained.adapter_mb,
                         adapter_dir=str(trained.adapter_dir)))
    curve: list[dict] = []
    if learning_curve:
        curve = _learning_curve(tuned_splits, base_spec, max(shots), lora, model, loaded, results, infos,
                                stages.step("learning curve"), should_stop, output_dir)
    comparison = build_comparison(results, infos, task=splits.task, labels=splits.labels, dataset=dataset,
                                  cost_model=cost_model, priorities=priorities, curve=curve,
                                  seconds=time.perf_counter() - started)
    comparison.save(output_dir)
    return comparison


def _train_progress(report: Progress) -> Callable[..., None]:
    """Adapt the trainer's progress records to (done, total, message)."""
    def on_progress(record: dict) -> None:
        if record.get("event", "progress") == "progress" and record.get("total_steps"):
            loss = record.get("train_loss")
            report(int(record["step"]), int(record["total_steps"]),
                   f"step {record['step']}/{record['total_steps']}" + (f", loss {loss:.3f}" if loss else ""))
    return on_progress


def _learning_curve(splits: Any, spec: Any, shots: int, lora: Any, model: str, loaded: Any, results: list,
                    infos: list, report: Progress, should_stop: Callable[[], bool] | None,
                    output_dir: Path) -> list[dict]:
    """Prompting (k-shot, examples drawn from the subset, 3 seeds) and fine-tuning on nested subsets."""
    from .evaluate import Arm, evaluate
    from .finetune import train_lora

    metric = primary_metric(splits.task)
    scale = 1 if metric == "accuracy" else 100
    sizes = learning_curve_sizes(len(splits.train))
    subsets = nested_subsets(splits.train, sizes, task=splits.task, seed=lora.seed)
    curve = []
    full = len(splits.train)
    best_prompt = max((r for r, i in zip(results, infos) if i.kind == "prompt"), key=lambda r: r.metrics[metric])
    tuned = next(r for r, i in zip(results, infos) if i.kind == "finetune")
    curve += [{"rows": full, "method": "prompting", "seed": lora.seed, "score": best_prompt.metrics[metric] / scale},
              {"rows": full, "method": "fine-tuning", "seed": lora.seed, "score": tuned.metrics[metric] / scale}]
    done, total = 0, sum(sizes[:-1])
    for n in sizes[:-1]:
        subset = type(splits)(train=subsets[n], validation=splits.validation, test=splits.test, task=splits.task)
        for seed in (0, 1, 2) if shots else (0,):
            arm = Arm(f"{shots}-shot from {n} rows", spec.with_(shots=min(shots, n), seed=seed), model=model)
            r = evaluate(arm, splits.test, task=splits.task, labels=splits.labels or None, train=subsets[n],
                         loaded=loaded, should_stop=should_stop)
            curve.append({"rows": n, "method": "prompting", "seed": seed, "score": r.metrics[metric] / scale})
        trained = train_lora(lora, subset, model_name=model, output_dir=output_dir / f"curve-{n}",
                             should_stop=should_stop)
        arm = Arm(f"LoRA on {n} rows", spec, model=model, adapter=str(trained.adapter_dir))
        r = evaluate(arm, splits.test, task=splits.task, labels=splits.labels or None, should_stop=should_stop)
        curve.append({"rows": n, "method": "fine-tuning", "seed": lora.seed, "score": r.metrics[metric] / scale})
        done += n
        report(done, total, f"{n} rows done")
    return curve


# -- comparisons as jobs, and from runs already in the store ---------------------------------------------

RESULT_FILE = "eval.json"  # an evaluated run's EvalResult, in its run folder


def save_eval_result(result: Any, folder: str | Path) -> Path:
    """Keep a run's per-row result next to it so later comparisons can reuse it without the model."""
    import json

    path = Path(folder) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), default=float), encoding="utf-8")
    return path


def load_eval_result(folder: str | Path) -> Any | None:
    import json

    from .evaluate import EvalResult

    path = Path(folder) / RESULT_FILE
    if not path.is_file():
        return None
    return EvalResult(**json.loads(path.read_text(encoding="utf-8")))


def comparable_runs(store: Any, dataset_id: int) -> list[Any]:
    """Finished prompt and fine-tuning runs of a dataset whose per-row results were kept."""
    runs = [r for r in store.list_runs(dataset_id=dataset_id, status="done") if r.kind in ("prompt", "finetune")]
    return [r for r in runs if r.folder and (Path(r.folder) / RESULT_FILE).is_file()]


def comparison_from_runs(runs: Sequence[Any], *, task: str, labels: Sequence[str], dataset: str = "",
                         cost_model: CostModel | None = None, priorities: Priorities | None = None) -> Comparison:
    """Compare runs already in the store (no model needed); they must have scored the same test rows."""
    from .errors import DataError

    results, infos = [], []
    for run in runs:
        result = load_eval_result(run.folder)
        result.arm = _unique_name(f"#{run.id} {run.name or result.arm}", [r.arm for r in results])
        results.append(result)
        infos.append(ArmInfo(result.arm, "finetune" if run.kind == "finetune" else "prompt",
                             train_seconds=float(run.timings.get("train_seconds", 0.0)),
                             train_rows=int(run.timings.get("train_rows", 0)),
                             train_peak_rss_mb=float(run.timings.get("train_peak_rss_mb", 0.0)),
                             adapter_mb=float(run.timings.get("adapter_mb", 0.0))))
    first = results[0]
    for r in results[1:]:
        if r.texts != first.texts or r.references != first.references:
            raise DataError(f"'{r.arm}' was scored on other test rows than '{first.arm}', so they cannot be "
                            "compared fairly.", "Run both on the full test split of the same dataset.")
    return build_comparison(results, infos, task=task, labels=labels, dataset=dataset, cost_model=cost_model,
                            priorities=priorities)


def _unique_name(name: str, taken: Sequence[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} ({n})", n + 1
    return candidate


def start_comparison(dataset: Any, *, model: str = "bundled", shots: Sequence[int] = (0, 4),
                     max_train: int | None = None, limit: int | None = None, learning_curve: bool = False,
                     instruction: str = "", seed: int = 0, epochs: float | None = None, store: Any = None) -> int:
    """Queue the standard comparison of a registered dataset as a background job; its run id.

    ``epochs`` overrides the Balanced preset's passes (the public demo caps them).
    """
    from .jobs import run_folder, submit, write_splits
    from .store import Store

    store = store or Store()
    settings = {"shots": list(shots), "max_train": max_train, "limit": limit, "learning_curve": learning_curve,
                "model": model, "seed": seed, "instruction": instruction, "epochs": epochs}
    run_id = store.add_run("compare", dataset_id=dataset.id, name=f"standard comparison of {dataset.name}",
                           settings=settings, status="created")
    folder = run_folder(run_id)
    args = ["compare", *write_splits(dataset.splits, folder / "data"), "--shots", ",".join(map(str, shots)),
            "--model", model, "--seed", str(seed), "--output", str(folder), "--name", dataset.name]
    if max_train:
        args += ["--max-train", str(int(max_train))]
    if limit:
        args += ["--limit", str(int(limit))]
    if learning_curve:
        args.append("--learning-curve")
    if epochs:
        args += ["--epochs", str(float(epochs))]
    if instruction:
        args += ["--instruction", instruction]
    return submit(args, kind="compare", run_id=run_id, store=store)


# -- prompt versions: kept results, history, two versions side by side -------------------------------------

def keep_prompt_version(store: Any, dataset_id: int | None, spec: Any, result: Any, *, name: str | None = None) -> Any:
    """Save a prompt scored on the full test split as a version and keep its per-row result in its run folder.

    The run then shows up among ``comparable_runs`` (the Compare page) and two versions can be tested
    against each other row by row. Returns the ``PromptVersion``.
    """
    from .evaluate import save_prompt_version
    from .jobs import run_folder

    version_id = save_prompt_version(store, dataset_id, spec, result, name=name)
    version = next(v for v in store.list_prompt_versions(dataset_id) if v.id == version_id)
    folder = run_folder(version.run_id)
    save_eval_result(result, folder)
    store.update_run(version.run_id, folder=str(folder))
    return version


def keep_variance(store: Any, run_id: int, spread: dict) -> None:
    """Record ``evaluate_seeds``' spread (mean, std, min, max, per seed) in a run's metrics under 'variance'."""
    run = store.get_run(run_id)
    kept = {k: v for k, v in spread.items() if k != "results"}
    store.update_run(run_id, metrics={**run.metrics, "variance": kept})


def prompt_history(store: Any, dataset_id: int | None, task: str) -> pd.DataFrame:
    """One row per saved prompt version of a dataset, oldest first: scores (0-100), spread, cost per query."""
    metric, second = ("accuracy", "macro_f1") if task == "classification" else ("chrf", "exact_match")
    scale = {"accuracy": 100, "macro_f1": 100, "chrf": 1, "exact_match": 100}
    rows = []
    for v in store.list_prompt_versions(dataset_id):
        run = store.get_run(v.run_id) if v.run_id is not None else None
        timings = run.timings if run else {}
        variance = v.metrics.get("variance") or {}
        rows.append({
            "version": v.id, "name": v.name, "model": (run.settings.get("model") or "") if run else "", "run": v.run_id,
            metric: v.metrics.get(metric, float("nan")) * scale[metric],
            second: v.metrics.get(second, float("nan")) * scale[second],
            "spread": variance.get("std", float("nan")) * scale[metric] if variance else float("nan"),
            "draws": len(variance.get("per_seed", [])),
            "prompt_tokens": timings.get("prompt_tokens_per_row", float("nan")),
            "ms_per_row": timings.get("ms_per_example", float("nan")),
            "kept": bool(run and run.folder and (Path(run.folder) / RESULT_FILE).is_file()),
            "created": pd.to_datetime(v.created, unit="s"),
        })
    columns = ["version", "name", "model", "run", metric, second, "spread", "draws", "prompt_tokens", "ms_per_row", "kept",
               "created"]
    return pd.DataFrame(rows, columns=columns)


def compare_versions(store: Any, a: Any, b: Any, task: str) -> dict:
    """What changed from version ``a`` to ``b`` and whether the score moved beyond luck and example-draw noise.

    Returns ``changes`` (one sentence per changed setting), ``test`` (a ``PairwiseTest`` on the same rows,
    or None when a result was not kept), ``spread`` (the larger seed spread of the two, metric units, or
    None) and ``sentences`` (plain-language verdicts).
    """
    from .prompting import diff_specs

    runs = [store.get_run(v.run_id) if v.run_id is not None else None for v in (a, b)]
    results = [load_eval_result(r.folder) if r and r.folder else None for r in runs]
    test = None
    if all(results) and results[0].references == results[1].references and results[0].texts == results[1].texts:
        results[0].arm, results[1].arm = a.name, b.name
        test = compare_pair(results[0], results[1], task)
    spreads = [(v.metrics.get("variance") or {}).get("std") for v in (a, b)]
    spreads = [s for s in spreads if s is not None]
    spread = max(spreads) if spreads else None
    metric = primary_metric(task)
    scale = 100 if metric == "accuracy" else 1
    difference = (b.metrics.get(metric, 0.0) - a.metrics.get(metric, 0.0)) * scale
    sentences = [test.sentence()] if test else [
        f"{b.name} scores {difference:+.1f} points against {a.name}; their answers per row were not both kept, so "
        "whether that is luck cannot be tested."]
    if spread is not None:
        noise = spread * scale
        within = abs(difference) <= 2 * noise  # two standard deviations: a rough 95% band
        sentences.append(f"Redrawing the examples moves the score by about ±{noise:.1f} points; the difference of "
                         f"{abs(difference):.1f} points is " + ("within twice that, so it may just be which "
                                                                "examples were drawn." if within else
                                                                "more than twice that."))
    return {"changes": diff_specs(a.spec, b.spec), "test": test, "spread": spread, "difference": difference,
            "sentences": sentences}
