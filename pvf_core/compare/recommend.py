"""The recommendation: which arm to use, the reasons in plain words, and what would change it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from ..settings import check_ranges, setting
from .costs import ArmCost, _money
from .stats import PairwiseTest, p_text, score_text

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
