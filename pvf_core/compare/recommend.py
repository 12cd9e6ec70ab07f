"""The recommendation: which arm to use, the rule that picked it, and the reasons in plain words.

The rule (``RULE_STEPS`` says it in words; ``Recommendation.rule`` carries its numbers):

1. Arms that another arm matches or beats on every count (score on the deciding metric, cost per query,
   work still to do) are set aside: whatever one cares about, they are not the answer.
2. Two arms are *separated* when one is ahead by at least the practical threshold (``min_difference``
   points) and the paired test is significant after Holm's correction. The correction counts the
   comparisons between the arms that can be the answer; a comparison with a set-aside arm counts as one
   more. Adding or removing a set-aside arm therefore changes no other comparison.
3. The candidates are the arms that no arm separates from above: the answer is never an arm that the
   significance table shows clearly behind another.
4. Among candidates, an arm is preferred to another when it is cheaper per query beyond the measurement's
   noise (plus any work still to do, e.g. a training that has not run); at the same cost the higher
   estimate is preferred (``among_equals="higher score"`` prefers the higher estimate first). The arm
   preferred to every other candidate is recommended; when costs within the noise of each other chain
   into a circle, the cheapest candidate.

Nothing is rescaled by the best or worst arm present, and each step only compares two arms, so an arm that is
no better than the recommended one on any count never changes the recommendation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

from ..settings import check_ranges, setting
from .costs import COST_NOISE, ArmCost, _money, cost_noise, same_cost
from .stats import ALPHA, METRIC_CHOICES, PairwiseTest, holm, luck_words, metric_name, rows_to_settle

RULE_STEPS = [
    "Arms that another arm matches or beats on every count (score, cost per query, work still to do) are set aside.",
    "Two arms are separated when one is ahead by at least the practical threshold and the paired test on the deciding "
    "metric is significant (p below {alpha} after Holm's correction for the comparisons made).",
    "The answer is never an arm that another arm is clearly ahead of.",
    "Among the arms the test rows do not separate, {among}.",
]


# -- settings -------------------------------------------------------------------------------------------

@dataclass
class Priorities:
    """What decides between arms: the metric, the smallest difference that matters, and the tie-break."""

    metric: str = setting("auto", "The score that decides. 'auto' takes macro-F1 when the answers are unbalanced (the "
                          "health check's rule), accuracy otherwise, and chrF for text-to-text.",
                          choices=METRIC_CHOICES)
    min_difference: float = setting(1.0, "The smallest difference, in points of the deciding score, that matters to "
                                    "you. Smaller differences, or ones the test rows cannot confirm, do not separate "
                                    "two arms.", min=0.0, max=20.0)
    among_equals: str = setting("cheaper", "Between arms the test rows do not separate: take the one that is cheaper "
                                "per query, or the one with the higher estimate.", choices=("cheaper", "higher score"))

    def __post_init__(self) -> None:
        check_ranges(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Priorities":
        """Reads files written before the decision rule (their weights for quality, speed... are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass
class ArmSummary:
    """What the recommendation needs to know about one arm."""

    arm: str
    kind: str  # "prompt" or "finetune"
    score: float  # the deciding metric, 0..1
    ms_per_query: float
    cost: ArmCost
    todo_cost: float = 0.0  # dollars still to spend before it can answer (a training not yet run); done work is 0


@dataclass
class Recommendation:
    arm: str
    reasons: list[str]
    what_would_change: list[str]
    scores: dict[str, float]  # each arm's estimate on the deciding metric (0..1)
    rule: dict = field(default_factory=dict)  # the metric, thresholds and steps used (empty in older files)
    candidates: list[str] = field(default_factory=list)  # arms the test rows do not separate from the answer
    set_aside: dict[str, str] = field(default_factory=dict)  # arm -> the arm at least as good on every count
    unsettled: list[dict] = field(default_factory=list)  # pairs not separated: chance each is better, rows needed

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Recommendation":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- the rule -------------------------------------------------------------------------------------------

def dominated(summaries: Sequence[ArmSummary]) -> dict[str, str]:
    """Arms another arm matches or beats on every count: arm -> that other arm.

    Exact comparisons (so "at least as good" chains: an arm set aside by a set-aside arm is also set aside by
    an arm that stays). Two arms equal on every count: the later one in the list is set aside.
    """
    out = {}
    for i, s in enumerate(summaries):
        for j, t in enumerate(summaries):
            if i == j:
                continue
            at_least = (t.score >= s.score and t.cost.cost_per_1000 <= s.cost.cost_per_1000
                        and t.todo_cost <= s.todo_cost)
            better = (t.score > s.score or t.cost.cost_per_1000 < s.cost.cost_per_1000 or t.todo_cost < s.todo_cost)
            if at_least and (better or j < i):
                out[s.arm] = t.arm
                break
    return out


def adjust(tests: dict[tuple[str, str], PairwiseTest], contenders: Sequence[str]) -> None:
    """Holm-adjust in place: the comparisons between ``contenders`` as one family; each other comparison as
    one more on top of them (so arms set aside never change the contenders' p-values)."""
    inner = [key for key in tests if key[0] in contenders and key[1] in contenders]
    k = len(inner)
    if k > 1:
        for key, p in zip(inner, holm([tests[key].p_value for key in inner])):
            tests[key].p_adjusted, tests[key].family = p, k
    else:
        for key in inner:
            tests[key].p_adjusted, tests[key].family = None, 1
    for key, test in tests.items():
        if key in inner:
            continue
        if k == 0:
            test.p_adjusted, test.family = None, 1
            continue
        family = [tests[other].p_value for other in inner] + [test.p_value]
        test.p_adjusted, test.family = holm(family)[-1], k + 1


def _test(tests: dict, a: str, b: str) -> tuple[PairwiseTest | None, float]:
    """The test of a and b, and the sign that turns its difference into 'b ahead of a'."""
    if (a, b) in tests:
        return tests[(a, b)], 1.0
    if (b, a) in tests:
        return tests[(b, a)], -1.0
    return None, 1.0


def separated(ahead: ArmSummary, behind: ArmSummary, tests: dict, min_difference: float) -> bool:
    """``ahead`` is clearly better than ``behind``: by at least the threshold, and significantly."""
    gap = (ahead.score - behind.score) * 100
    test, _ = _test(tests, behind.arm, ahead.arm)
    return gap > 0 and gap >= min_difference - 1e-9 and test is not None and test.significant


def _preferred(a: ArmSummary, b: ArmSummary, horizon: float, among: str, order: dict[str, int]) -> bool:
    """Whether ``a`` is preferred to ``b`` when the test rows do not separate them."""
    cost_a = a.cost.cost_per_1000 / 1000 * horizon + a.todo_cost
    cost_b = b.cost.cost_per_1000 / 1000 * horizon + b.todo_cost
    tolerance = cost_noise(a.cost, b.cost) * max(min(cost_a, cost_b), 1e-300)
    same = abs(cost_a - cost_b) <= tolerance if (a.todo_cost or b.todo_cost) else same_cost(a.cost, b.cost)
    if among == "higher score":
        key_a, key_b = (a.score, -cost_a), (b.score, -cost_b)
    elif same:
        key_a, key_b = (0, a.score, -cost_a), (0, b.score, -cost_b)
    else:
        key_a, key_b = (-cost_a,), (-cost_b,)
    if key_a != key_b:
        return key_a > key_b
    return order[a.arm] < order[b.arm]


def recommend(summaries: Sequence[ArmSummary], tests: dict[tuple[str, str], PairwiseTest],
              priorities: Priorities = Priorities(), *, metric: str = "accuracy",
              break_even: float | None = None, crossover_rows: int | None = None,
              n_train: int | None = None, horizon_queries: float = 1_200_000,
              rows: int | None = None) -> Recommendation:
    """Apply the decision rule (module docstring) and say why, naming both arms in every reason.

    ``tests`` maps (a, b) to the paired test of the two arms on ``metric``; their Holm adjustment is set here
    (in place), so the significance table shows the p-values the decision used. ``horizon_queries`` (queries
    per month x months) weighs work still to do against the per-query cost; ``rows`` is the number of test
    rows (for "about how many more rows would settle it").
    """
    order = {s.arm: i for i, s in enumerate(summaries)}
    by_name = {s.arm: s for s in summaries}
    threshold = priorities.min_difference
    set_aside = dominated(summaries)
    contenders = [s for s in summaries if s.arm not in set_aside]
    adjust(tests, [s.arm for s in contenders])
    beaten = {s.arm: next((t.arm for t in summaries if separated(t, s, tests, threshold)), None) for s in summaries}
    candidates = [s for s in contenders if beaten[s.arm] is None]
    prefer = lambda a, b: _preferred(a, b, horizon_queries, priorities.among_equals, order)  # noqa: E731
    winner = next((a for a in candidates if all(prefer(a, b) for b in candidates if b is not a)), None)
    if winner is None:  # preferences go round in a circle (costs within noise in a chain): the cheapest
        winner = min(candidates, key=lambda s: (s.cost.cost_per_1000 / 1000 * horizon_queries + s.todo_cost,
                                                -s.score, order[s.arm]))
    rows = rows or _rows(tests)
    unsettled = [_unsettled(winner, s, tests, threshold, rows) for s in candidates if s is not winner]
    reasons = _reasons(winner, summaries, tests, set_aside, beaten, by_name, metric, threshold, unsettled, priorities)
    changes = _what_would_change(winner, summaries, break_even, crossover_rows, n_train, unsettled)
    rule = _rule(metric, priorities, tests, len(contenders))
    return Recommendation(winner.arm, reasons, changes, {s.arm: round(s.score, 4) for s in summaries}, rule,
                          [s.arm for s in candidates], set_aside, unsettled)


def tied_with_best(summaries: Sequence[ArmSummary], tests: dict[tuple[str, str], PairwiseTest],
                   min_difference: float = 1.0) -> set[str]:
    """Arms the test rows do not separate from the best-scoring arm."""
    best = max(summaries, key=lambda s: s.score)
    return {s.arm for s in summaries if not separated(best, s, tests, min_difference)}


def _rows(tests: dict) -> int:
    return max((int(t.details.get("rows", 0)) for t in tests.values()), default=0)


def _rule(metric: str, priorities: Priorities, tests: dict, contenders: int) -> dict:
    among = ("the cheaper per query wins; at the same cost the higher estimate"
             if priorities.among_equals == "cheaper" else "the higher estimate wins; at the same estimate the cheaper")
    return {"metric": metric, "metric_setting": priorities.metric, "alpha": ALPHA,
            "correction": ("Holm" if contenders > 2 else "none: one comparison between arms that can be the answer"
                           if contenders == 2 else "none: one arm is at least as good as every other on every count"),
            "comparisons_corrected_for": max(1, contenders * (contenders - 1) // 2),
            "min_difference_points": priorities.min_difference, "among_equals": priorities.among_equals,
            "cost_noise": COST_NOISE, "weights": "none: no score adds up criteria; each step compares two arms",
            "steps": [step.format(alpha=ALPHA, among=among) for step in RULE_STEPS]}


# -- the reasons ----------------------------------------------------------------------------------------

def score_phrase(arm: str, score: float, metric: str, *, first: bool = True) -> str:
    """'4-shot answers right 46.5% of the time' (first) or 'zero-shot 39.0%' (second), per metric."""
    if metric == "accuracy":
        return f"{arm} answers right {score:.1%} of the time" if first else f"{arm} {score:.1%}"
    value = f"{score * 100:.1f}"
    return f"{arm} has a {metric_name(metric)} of {value}" if first else f"{arm} {value}"


def both(a: ArmSummary, b: ArmSummary, metric: str) -> str:
    """'LoRA answers right 80.0% of the time, 4-shot 78.0%'."""
    return f"{score_phrase(a.arm, a.score, metric)}, {score_phrase(b.arm, b.score, metric, first=False)}"


def _unsettled(winner: ArmSummary, other: ArmSummary, tests: dict, threshold: float, rows: int) -> dict:
    test, sign = _test(tests, other.arm, winner.arm)
    chance = None
    if test is not None and test.chance_b_better is not None:
        chance = test.chance_b_better if sign > 0 else 1 - test.chance_b_better
    gap = (winner.score - other.score) * 100
    return {"a": winner.arm, "b": other.arm, "difference_points": round(gap, 2),
            "chance_a_better": None if chance is None else round(chance, 3),
            "p_value": None if test is None else test.p, "below_threshold": abs(gap) < threshold,
            "more_rows": None if test is None or not rows else rows_to_settle(test, rows)}


def _reasons(winner: ArmSummary, summaries: Sequence[ArmSummary], tests: dict, set_aside: dict[str, str],
             beaten: dict, by_name: dict, metric: str, threshold: float, unsettled: list[dict],
             priorities: Priorities) -> list[str]:
    reasons = []
    open_pairs = {u["b"]: u for u in unsettled}
    for other in summaries:
        if other is winner:
            continue
        test, sign = _test(tests, other.arm, winner.arm)
        p_part = f" ({test.p_words()})" if test is not None else ""
        if separated(winner, other, tests, threshold):
            reasons.append(f"{both(winner, other, metric)}: {(winner.score - other.score) * 100:.1f} points apart, "
                           f"{luck_words(test.p)}{p_part}.")
        elif other.arm in open_pairs:
            reasons.append(_not_separated(winner, other, test, threshold, open_pairs[other.arm], metric, priorities))
        elif other.arm in set_aside:
            by = by_name[set_aside[other.arm]]
            t, _ = _test(tests, other.arm, by.arm)
            gap = (by.score - other.score) * 100
            evidence = f" ({gap:.1f} points: {luck_words(t.p)}, {t.p_words()})" if t is not None and gap >= 0.05 else ""
            reasons.append(f"{other.arm} is set aside: {both(by, other, metric)}{evidence}, and {by.arm} costs no more "
                           f"per query ({_money(by.cost.cost_per_1000)} against {_money(other.cost.cost_per_1000)} "
                           f"per 1,000 texts), so {by.arm} is at least as good on every count.")
        else:
            ahead = by_name[beaten[other.arm]]
            t, _ = _test(tests, other.arm, ahead.arm)
            reasons.append(f"{other.arm} is not a candidate: {both(ahead, other, metric)}, "
                           f"{(ahead.score - other.score) * 100:.1f} points apart, {luck_words(t.p)} ({t.p_words()}).")
    reasons.append(_cost_sentence(winner))
    return reasons


def _not_separated(winner: ArmSummary, other: ArmSummary, test: PairwiseTest | None, threshold: float,
                   pair: dict, metric: str, priorities: Priorities) -> str:
    gap = abs(winner.score - other.score) * 100
    if test is None:
        why = "no paired test was possible"
    elif gap < threshold and test.significant:
        why = (f"the difference of {gap:.1f} points is below your threshold of {threshold:g} "
               f"({luck_words(test.p)}, {test.p_words()})")
    elif gap < 0.05:
        why = f"they score the same ({test.p_words()})"
    else:
        why = f"a difference of {gap:.1f} points, {luck_words(test.p)} ({test.p_words()})"
    text = f"The test rows do not separate {winner.arm} and {other.arm}: {both(winner, other, metric)}; {why}."
    if pair["chance_a_better"] is not None and gap >= 0.05:
        chance = pair["chance_a_better"]
        text += f" The chance that {winner.arm} is the better one is about {chance:.0%}, {other.arm} {1 - chance:.0%}."
    if pair["more_rows"] is not None and not pair["below_threshold"]:
        text += f" About {pair['more_rows']:,} more labelled test rows would settle it, if the difference held."
    if priorities.among_equals == "higher score":
        text += f" {winner.arm} has the higher estimate." if winner.score > other.score else ""
    elif same_cost(winner.cost, other.cost) and not (winner.todo_cost or other.todo_cost):
        text += (f" They cost the same per query ({_money(winner.cost.cost_per_1000)} against "
                 f"{_money(other.cost.cost_per_1000)} per 1,000 texts, within the measurement's noise)"
                 + (f", and {winner.arm} has the higher estimate." if winner.score > other.score else "."))
    elif winner.cost.cost_per_1000 < other.cost.cost_per_1000:
        text += (f" {winner.arm} costs less per query: {_money(winner.cost.cost_per_1000)} against "
                 f"{_money(other.cost.cost_per_1000)} per 1,000 texts.")
    return text


def _cost_sentence(winner: ArmSummary) -> str:
    cost = winner.cost
    measured = cost.basis == "computed tokens" and cost.computed_tokens_per_query and cost.ms_per_token
    basis = (f", from {cost.computed_tokens_per_query:,.0f} computed tokens per text at {cost.ms_per_token:.2g} ms "
             "per token" if measured else "")
    monthly = cost.running_monthly_cost if cost.running_monthly_cost is not None else cost.monthly_cost
    text = (f"At your volume {winner.arm} costs {_money(monthly)} a month: {_money(cost.cost_per_1000)} per 1,000 "
            f"texts{basis}.")
    if cost.one_off_cost:
        text += (f" Its training ({_money(cost.one_off_cost)}, {cost.one_off_seconds:,.0f} s) is already done, so it "
                 "is not counted as a cost of choosing it.")
    return text


def _what_would_change(winner: ArmSummary, summaries: Sequence[ArmSummary], break_even: float | None,
                       crossover_rows: int | None, n_train: int | None, unsettled: list[dict]) -> list[str]:
    changes = []
    for pair in unsettled:
        if pair["more_rows"] is not None and not pair["below_threshold"]:
            changes.append(f"About {pair['more_rows']:,} more labelled test rows could separate {pair['a']} and "
                           f"{pair['b']}, if the difference held.")
    if break_even is not None:
        changes.append(f"Fine-tuning's training cost is paid back by its cheaper queries after about {break_even:,.0f} "
                       "queries; below that volume, with the training still to do, prompting would be cheaper.")
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
