"""Paired significance of two arms on the same rows, intervals, and how p-values and scores read."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Sequence

import numpy as np

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
    from ..metrics import chrf_of_rows, chrf_statistics

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
    chance = float((diffs > 0).mean() + 0.5 * (diffs == 0).mean())  # share of resamples where B is ahead
    return {"difference": float(observed), "low": float(low), "high": float(high), "p_value": float(p),
            "standard_error": float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0, "chance_b_better": chance}


def paired_bootstrap_macro_f1(references: Sequence[str], predictions_a: Sequence[str], predictions_b: Sequence[str],
                              *, labels: Sequence[str] | None = None, samples: int = 1000,
                              seed: int = 0) -> dict[str, float]:
    """``paired_bootstrap`` of macro-F1 (scikit-learn's ``f1_score(average="macro")`` over the ``labels`` that
    occur), the same resamples as ``resampled``; each resample is scored from label counts in one vectorised pass
    (equal to calling ``f1_score`` on it, which a test checks, and a thousand times faster)."""
    from sklearn.metrics import f1_score

    seen = set(references) | set(predictions_a) | set(predictions_b)
    # the labels that occur (as ``metrics.classification_metrics`` averages), one set for both arms
    labels = [label for label in labels if label in seen] if labels else sorted(seen)
    observed = (f1_score(list(references), list(predictions_b), labels=labels, average="macro", zero_division=0)
                - f1_score(list(references), list(predictions_a), labels=labels, average="macro", zero_division=0))
    codes = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    refs = np.array([codes.get(r, k) for r in references])
    pa = np.array([codes.get(p, k) for p in predictions_a])
    pb = np.array([codes.get(p, k) for p in predictions_b])
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, len(refs), len(refs)) for _ in range(samples)]) if len(refs) else \
        np.zeros((samples, 0), int)
    diffs = _macro_f1_rows(refs[idx], pb[idx], k) - _macro_f1_rows(refs[idx], pa[idx], k)
    return _bootstrap_summary(float(observed), diffs)


def _macro_f1_rows(refs: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 of each row of ``refs``/``preds`` (label codes 0..k-1; k = outside the labels), as scikit-learn
    computes it with ``labels`` given and ``zero_division=0``: a label never true nor predicted scores 0."""
    samples = refs.shape[0]
    offsets = (np.arange(samples) * (k + 1))[:, None]
    true = np.bincount((refs + offsets).ravel(), minlength=samples * (k + 1)).reshape(samples, k + 1)[:, :k]
    said = np.bincount((preds + offsets).ravel(), minlength=samples * (k + 1)).reshape(samples, k + 1)[:, :k]
    hits = np.where(refs == preds, refs, k)
    right = np.bincount((hits + offsets).ravel(), minlength=samples * (k + 1)).reshape(samples, k + 1)[:, :k]
    denominator = true + said
    f1 = np.divide(2 * right, denominator, out=np.zeros(true.shape, float), where=denominator > 0)
    return f1.mean(axis=1) if k else np.zeros(samples)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a proportion (accuracy) that behaves at 0 and 1."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "chrf": "chrF"}
METRIC_CHOICES = ("auto", "accuracy", "macro_f1", "chrf")


def metric_name(metric: str) -> str:
    """How a metric key reads: 'accuracy', 'macro-F1', 'chrF'."""
    return METRIC_NAMES.get(_metric_key(metric), metric)


def _metric_key(metric: str) -> str:
    """'macro-F1' -> 'macro_f1', 'chrF' -> 'chrf' (older files stored the readable names)."""
    return {"macro-f1": "macro_f1", "macro f1": "macro_f1"}.get(metric.lower(), metric.lower())


@dataclass
class PairwiseTest:
    """Is arm ``b`` better or worse than arm ``a`` on the same rows, beyond luck?

    ``p_value`` is the test's own; ``p_adjusted`` the same after Holm's correction for the ``family``
    comparisons made together (None when there is only one). ``significant`` reads the adjusted value.
    """

    a: str
    b: str
    metric: str
    difference: float  # b - a, in metric units (0..1)
    p_value: float
    test: str
    low: float | None = None
    high: float | None = None
    details: dict = field(default_factory=dict)
    p_adjusted: float | None = None
    family: int = 1  # how many comparisons the adjustment accounts for
    resamples: int | None = None  # bootstrap tests: how many (sets the p-value's resolution)

    @property
    def p(self) -> float:
        """The p-value that counts: adjusted where there is more than one comparison."""
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    @property
    def significant(self) -> bool:
        return self.p < ALPHA

    @property
    def chance_b_better(self) -> float | None:
        """How likely ``b`` is truly the better arm on this metric, given these rows (0..1), where known."""
        return self.details.get("chance_b_better")

    def p_words(self) -> str:
        """'p = 0.032', with the adjusted value beside it when there is one."""
        text = p_text(self.p_value, self.resamples)
        if self.p_adjusted is not None:
            text += f"; {p_text(self.p_adjusted, self.resamples)} after correcting for {self.family} comparisons"
        return text

    def sentence(self) -> str:
        points = abs(self.difference) * 100
        name = metric_name(self.metric)
        if points < 0.05:
            return f"{self.a} and {self.b} score the same {name} ({self.p_words()})."
        better, worse = (self.b, self.a) if self.difference > 0 else (self.a, self.b)
        return (f"{better} is better than {worse} by {points:.1f} points of {name}: {luck_words(self.p)} "
                f"({self.p_words()}).")

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant, "sentence": self.sentence()}

    @classmethod
    def from_dict(cls, data: dict) -> "PairwiseTest":
        """Also reads files written before adjusted p-values (their extra keys are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def luck_words(p_value: float) -> str:
    """What a p-value says, in graded plain words (never 'could easily be luck' at p = 0.05)."""
    if p_value < 0.001:
        return "very unlikely to be luck"
    if p_value < 0.01:
        return "unlikely to be luck"
    if p_value < ALPHA:
        return "probably not luck"
    if p_value < 0.10:
        return "suggestive, but it could still be luck"
    if p_value < 0.30:
        return "it could well be luck"
    return "it could easily be luck"


def primary_metric(task: str) -> str:
    """The metric that decides when nothing is known about the answers' balance."""
    return "accuracy" if task == "classification" else "chrf"


def deciding_metric(task: str, label_counts: dict[str, int] | Sequence[str] | None = None, choice: str = "auto") -> str:
    """The metric the comparison decides on: the user's ``choice``, or for "auto" chrF for text-to-text,
    macro-F1 when the answers are unbalanced by the health check's rule (``metrics.unbalanced``), else accuracy."""
    from ..metrics import unbalanced

    choice = _metric_key(choice or "auto")
    if choice not in METRIC_CHOICES:
        raise ValueError(f"unknown metric {choice!r}; use one of {', '.join(METRIC_CHOICES)}")
    if task != "classification":
        return "chrf"
    if choice == "chrf":
        raise ValueError("chrF is for text-to-text tasks; a classification compares accuracy or macro-F1")
    if choice != "auto":
        return choice
    if isinstance(label_counts, dict):
        label_counts = [label for label, n in label_counts.items() for _ in range(int(n))]
    return "macro_f1" if label_counts is not None and unbalanced(label_counts) else "accuracy"


def metric_value(result: Any, metric: str) -> float:
    """An arm's score on ``metric``, 0..1 (chrF is stored 0..100)."""
    metric = _metric_key(metric)
    return result.metrics[metric] / (100 if metric == "chrf" else 1)


def compare_pair(a: Any, b: Any, task: str, *, metric: str | None = None, labels: Sequence[str] | None = None,
                 samples: int = 1000, seed: int = 0) -> PairwiseTest:
    """Paired test of two results on identical rows, on ``metric`` (default: accuracy, or chrF for text).

    Accuracy: exact McNemar on the rows only one arm got right. Macro-F1 and chrF: paired bootstrap (the
    same resampled rows for both arms). ``details["chance_b_better"]`` is how likely b is the better arm:
    for accuracy from a uniform Beta posterior on the discordant rows, for the others the share of
    resamples where b is ahead (ties half).
    """
    if list(a.references) != list(b.references):
        raise ValueError(f"{a.arm} and {b.arm} were not evaluated on the same rows")
    metric = _metric_key(metric or primary_metric(task))
    n = max(len(a.references), 1)
    if metric == "accuracy":
        from scipy.stats import beta

        ra = [p == r for p, r in zip(a.predictions, a.references)]
        rb = [p == r for p, r in zip(b.predictions, b.references)]
        only_a, only_b, p = mcnemar_exact(ra, rb)
        diff = (sum(rb) - sum(ra)) / n
        # per-row difference (+1, -1 or 0): its variance gives the standard error used for "rows to settle it"
        se = math.sqrt(max((only_a + only_b) / n - diff ** 2, 0.0) / n)
        chance = float(beta.sf(0.5, only_b + 1, only_a + 1))
        return PairwiseTest(a.arm, b.arm, "accuracy", diff, p, "exact McNemar",
                            details={"only_a_right": only_a, "only_b_right": only_b, "rows": n,
                                     "standard_error": se, "chance_b_better": chance})
    if metric == "macro_f1":
        boot = paired_bootstrap_macro_f1(a.references, a.predictions, b.predictions, labels=labels,
                                         samples=samples, seed=seed)
        name = "macro_f1"
    else:
        boot = paired_bootstrap_chrf(a.references, a.predictions, b.predictions, samples=samples, seed=seed)
        name = "chrF"
    return PairwiseTest(a.arm, b.arm, name, boot["difference"], boot["p_value"], "paired bootstrap",
                        low=boot["low"], high=boot["high"], resamples=samples,
                        details={"rows": n, "standard_error": boot["standard_error"],
                                 "chance_b_better": boot["chance_b_better"]})


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: p-values that keep the chance of any false "significant" under ALPHA."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def rows_to_settle(test: PairwiseTest, rows: int, alpha: float = ALPHA) -> int | None:
    """About how many more labelled test rows would make this difference significant, if it stayed the same.

    The standard error shrinks with the square root of the rows: n_needed = n * (z * se / |difference|)^2,
    with z for ``alpha`` corrected for the test's family (Bonferroni's bound, a little cautious).
    None when the arms score the same (there is no difference to confirm).
    """
    from scipy.stats import norm

    se = test.details.get("standard_error")
    if se is None and test.low is not None and test.high is not None:
        se = (test.high - test.low) / (2 * 1.96)
    if not se or abs(test.difference) < 1e-12:
        return None
    z = float(norm.isf(alpha / (2 * max(test.family, 1))))
    needed = rows * (z * se / abs(test.difference)) ** 2
    return max(0, int(math.ceil(needed - rows)))


def macro_f1_interval(result: Any, labels: Sequence[str], *, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% interval of one arm's macro-F1."""
    from sklearn.metrics import f1_score

    refs, preds = np.asarray(result.references, object), np.asarray(result.predictions, object)
    values = resampled(len(refs), lambda idx: f1_score(refs[idx], preds[idx], labels=list(labels), average="macro",
                                                       zero_division=0), samples, seed)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def p_text(p_value: float, resamples: int | None = None) -> str:
    """'p = 0.032'; 'p < 0.001' for an exact test; a bootstrap p-value never claims more than its resolution:
    with 1,000 resamples it reads 'p < 0.002 with 1,000 resamples' at best."""
    if resamples:
        floor = 2 / resamples
        if p_value < floor:
            return f"p < {floor:.2g} with {resamples:,} resamples"
        return f"p = {p_value:.3f}"
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def score_text(score: float, metric: str, *, named: bool = True) -> str:
    """A score as people read it: '78.0% accuracy', 'chrF 80.0', 'macro-F1 29.2' (neither is a percentage)."""
    if _metric_key(metric) in ("chrf", "macro_f1"):
        return f"{metric_name(metric)} {score * 100:.1f}" if named else f"{score * 100:.1f}"
    return f"{score:.1%} {metric}" if named else f"{score:.1%}"
