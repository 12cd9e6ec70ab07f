"""The decision rule: properties over many random comparisons, and the cases issue 12 reported.

Arms are real ``EvalResult``s with made-up predictions, so the paired tests, costs and recommendation are
the code's own; nothing here stubs the statistics.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pvf_core import compare as c
from pvf_core.evaluate import EvalResult
from pvf_core.metrics import classification_metrics

MODEL = "SmolLM2-135M-Instruct (bundled, runs offline)"
LABELS3 = ["a", "b", "c"]


def arm(name, predictions, references, *, tokens=34.0, ms_per_token=0.5, model=MODEL, labels=None, measured=False,
        **extra):
    """An EvalResult whose wall-clock time is deliberately noisy: costs must come from tokens, not from it.

    ``measured``: the result carries the model's per-token time as the harness measures it (once per model).
    """
    labels = labels or sorted(set(references))
    noisy_ms = tokens * ms_per_token * float(np.random.default_rng(abs(hash(name)) % 2**32).uniform(0.3, 8.0))
    result = EvalResult(arm=name, task="classification", n_test=len(references),
                        metrics=classification_metrics(references, predictions, labels),
                        texts=[f"t{i}" for i in range(len(references))], references=list(references),
                        predictions=list(predictions), label_scores=None, ms_per_example=noisy_ms,
                        latencies_ms=[noisy_ms] * len(references), prompt_tokens_per_row=tokens, peak_rss_mb=900.0,
                        seconds=1.0, calibration="none", computed_tokens_per_row=tokens, model=model)
    for key, value in extra.items():
        setattr(result, key, value)
    if measured:
        result.ms_per_token = ms_per_token
    return result


def info(result, kind=None, train_seconds=0.0):
    kind = kind or ("finetune" if "+" in result.model else "prompt")
    return c.ArmInfo(result.arm, kind, train_seconds=train_seconds if kind == "finetune" else 0.0)


def build(results, *, infos=None, **kwargs):
    infos = infos or [info(r, train_seconds=300.0) for r in results]
    labels = sorted(set(results[0].references))
    return c.build_comparison(results, infos, task="classification", labels=labels, samples=400, **kwargs)


def with_predictions(references, correct, rng, labels, wrong_to=None):
    """Predictions right where ``correct`` is True; elsewhere another label (``wrong_to`` or a random one)."""
    out = []
    for ref, ok in zip(references, correct):
        if ok:
            out.append(ref)
        else:
            others = [x for x in labels if x != ref]
            out.append(wrong_to if wrong_to is not None and wrong_to != ref else others[rng.integers(len(others))])
    return out


def random_arms(rng, n_arms, rows=160):
    """Arms with correlated errors (shared row difficulty), on one or two base models, with various prompt sizes."""
    shares = rng.dirichlet(np.ones(3) * rng.choice([0.8, 5.0]))
    references = list(rng.choice(LABELS3, rows, p=shares))
    difficulty = rng.uniform(0, 1, rows)
    centre, spread = rng.uniform(0.45, 0.85), rng.choice([0.03, 0.08, 0.3])  # arms close together, or not
    results = []
    for i in range(n_arms):
        skill = float(np.clip(centre + rng.uniform(-spread, spread), 0.2, 0.95))
        shared = rng.uniform(0.3, 1.0)
        correct = np.where(rng.uniform(0, 1, rows) < shared, difficulty < skill, rng.uniform(0, 1, rows) < skill)
        model = MODEL if rng.uniform() < 0.8 else "Qwen2.5-0.5B"
        tuned = rng.uniform() < 0.4
        tokens = float(rng.choice([30.0, 34.0, 120.0, 300.0])) * rng.uniform(1.0, 1.04)
        results.append(arm(f"arm{i}", with_predictions(references, correct, rng, LABELS3), references, tokens=tokens,
                           ms_per_token=0.5 if model == MODEL else 1.7,
                           model=f"{model} + adapter" if tuned else model, labels=LABELS3, measured=True))
    return results


def worse_copy(rng, best, name):
    """An arm no better than ``best`` on any count: it loses some of best's right answers, costs at least as much."""
    refs = best.references
    correct = np.array([p == r for p, r in zip(best.predictions, refs)])
    lose = correct & (rng.uniform(0, 1, len(refs)) < rng.choice([0.02, 0.05, 0.3]) * rng.uniform())
    wrong = with_predictions(refs, ~lose, rng, LABELS3)  # a wrong answer for each lost row
    predictions = [q if lost else p for p, q, lost in zip(best.predictions, wrong, lose)]
    return arm(name, predictions, refs, tokens=best.computed_tokens_per_row * rng.uniform(1.0, 3.0),
               ms_per_token=0.5 if best.model.startswith(MODEL) else 1.7, model=best.model, labels=LABELS3,
               measured=True)


def independent_worse(rng, best, metric, name, results):
    """An arm drawn on its own (it may beat other arms), kept only if no better than ``best`` on any count."""
    for _ in range(50):
        candidate = random_arms(rng, 1, rows=len(best.references))[0]
        candidate = arm(name, [p for p in candidate.predictions], best.references,
                        tokens=best.computed_tokens_per_row * rng.uniform(1.0, 2.0),
                        ms_per_token=0.5 if best.model.startswith(MODEL) else 1.7, model=best.model, labels=LABELS3,
               measured=True)
        if c.metric_value(candidate, metric) <= c.metric_value(best, metric):
            return candidate
    return worse_copy(rng, best, name)


def clearly_ahead(comparison, ahead, behind):
    """Whether the significance table shows ``ahead`` clearly ahead of ``behind`` (threshold and significance)."""
    test = next(t for t in comparison.tests if {t.a, t.b} == {ahead, behind})
    gap = (test.difference if test.b == ahead else -test.difference) * 100
    return gap >= comparison.priorities.min_difference and gap > 0 and test.significant


# -- properties ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_adding_an_arm_no_better_on_any_count_never_changes_the_recommendation(seed):
    rng = np.random.default_rng(seed)
    results = random_arms(rng, int(rng.integers(2, 5)))
    before = build(results)
    best = before.result(before.recommendation.arm)
    for extra in (worse_copy(rng, best, "extra-copy"),
                  independent_worse(rng, best, before.metric, "extra-drawn", results)):
        assert c.metric_value(extra, before.metric) <= c.metric_value(best, before.metric)
        after = build(results + [extra])
        assert after.metric == before.metric
        assert after.recommendation.arm == before.recommendation.arm, (after.recommendation.reasons,
                                                                        before.recommendation.reasons)
        # and removing it again gives back the same answer
        assert build(results).recommendation.arm == before.recommendation.arm


@pytest.mark.parametrize("seed", range(40))
def test_the_recommended_arm_is_never_clearly_behind_another_and_reasons_agree_with_the_table(seed):
    rng = np.random.default_rng(100 + seed)
    results = random_arms(rng, int(rng.integers(2, 6)))
    for threshold in (0.0, 1.0, 4.0):
        comparison = build(results, priorities=c.Priorities(min_difference=threshold))
        rec = comparison.recommendation
        for other in results:
            if other.arm != rec.arm:
                assert not clearly_ahead(comparison, other.arm, rec.arm), rec.reasons
        for reason in rec.reasons:
            if reason.startswith("The test rows do not separate "):
                other = next(u["b"] for u in rec.unsettled if reason.startswith(
                    f"The test rows do not separate {rec.arm} and {u['b']}:"))
                assert not clearly_ahead(comparison, rec.arm, other)
        names = [r.arm for r in results]
        for reason in rec.reasons:  # a reason that says "apart" is a separation the table shows
            if "points apart" in reason:
                named = [n for _, n in sorted((reason.find(f"{n} "), n) for n in names if f"{n} " in reason)]
                ahead, behind = named[0], named[1]
                if " is not a candidate: " in reason:  # "<behind> is not a candidate: <ahead> ..., <behind> ..."
                    ahead, behind = behind, ahead
                assert clearly_ahead(comparison, ahead, behind), reason
        for other in results:
            if other.arm != rec.arm and clearly_ahead(comparison, rec.arm, other.arm):
                assert any(r.startswith(f"{rec.arm} ") and f", {other.arm} " in r and "points apart" in r
                           for r in rec.reasons), rec.reasons
        if threshold == 0.0:  # with no practical threshold: never behind on any significant test
            for t in comparison.tests:
                if rec.arm in (t.a, t.b) and t.significant:
                    assert (t.difference > 0) == (t.b == rec.arm) or t.difference == 0


def test_a_p_value_adjusted_for_several_arms_is_shown_and_decides():
    rng = np.random.default_rng(7)
    refs = list(rng.choice(["x", "y"], 300))
    base = np.array(rng.uniform(0, 1, 300) < 0.7)
    a = arm("A", with_predictions(refs, base, rng, ["x", "y"]), refs, tokens=30)
    flip = np.zeros(300, bool)
    flip[np.flatnonzero(~base)[:24]] = True  # B gets 24 more rows right ...
    lose = np.zeros(300, bool)
    lose[np.flatnonzero(base)[:11]] = True  # ... and 11 fewer: McNemar p = 0.041
    b = arm("B", with_predictions(refs, (base | flip) & ~lose, rng, ["x", "y"]), refs, tokens=300)
    two = build([a, b])
    test = two.tests[0]
    assert test.p_value == pytest.approx(0.041, abs=1e-3) and test.p_adjusted is None and test.significant
    # a third arm that can be the answer (cheapest) makes three comparisons: Holm is applied and shown
    weaker = base.copy()
    weaker[np.flatnonzero(base)[:30]] = False
    cheap = arm("C", with_predictions(refs, weaker, rng, ["x", "y"]), refs, tokens=10)
    three = build([a, b, cheap])
    ab = next(t for t in three.tests if {t.a, t.b} == {"A", "B"})
    assert ab.family == 3 and ab.p_adjusted >= ab.p_value
    assert "after correcting for 3 comparisons" in ab.sentence()
    assert three.recommendation.rule["correction"] == "Holm"


def test_holm_known_values():
    assert c.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert c.holm([0.5]) == [0.5] and c.holm([]) == []


def test_bootstrap_p_values_say_their_resolution_and_words_are_graded():
    assert c.p_text(0.0, 500) == "p < 0.004 with 500 resamples"
    assert c.p_text(0.0, 1000) == "p < 0.002 with 1,000 resamples"
    assert c.p_text(0.0004) == "p < 0.001"  # an exact test may say so
    assert c.luck_words(0.05) != "it could easily be luck" and "could still be luck" in c.luck_words(0.05)
    assert c.luck_words(0.049) == "probably not luck" and c.luck_words(0.0001) == "very unlikely to be luck"
    assert c.luck_words(0.6) == "it could easily be luck"
    refs = ["a", "b", "c"] * 60
    good = arm("good", refs, refs)
    bad = arm("bad", ["a"] * len(refs), refs)
    test = c.compare_pair(bad, good, "classification", metric="macro_f1", labels=["a", "b", "c"], samples=500)
    assert test.p_value == 0 and "p < 0.004 with 500 resamples" in test.sentence()
    assert "p < 0.001" not in test.sentence()


def test_the_macro_f1_bootstrap_equals_scikit_learn_on_every_resample():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    refs = list(rng.choice(["a", "b", "c", "d"], 80, p=[0.6, 0.2, 0.15, 0.05]))
    pa, pb = list(rng.choice(["a", "b", "c"], 80)), list(rng.choice(["a", "b", "c", "d"], 80))
    fast = c.paired_bootstrap_macro_f1(refs, pa, pb, labels=["a", "b", "c", "d"], samples=50, seed=4)
    f1 = lambda r, p: f1_score(list(r), list(p), labels=["a", "b", "c", "d"], average="macro", zero_division=0)
    slow = c.paired_bootstrap(f1, refs, pa, pb, samples=50, seed=4)
    assert {k: fast[k] for k in slow} == pytest.approx(slow)


# -- costs --------------------------------------------------------------------------------------------------

def test_a_merged_adapter_costs_what_its_base_model_costs_for_the_same_prompt():
    refs = ["a", "b"] * 50
    zero = arm("zero-shot", refs[:60] + ["a"] * 40, refs, tokens=34.0)
    zero.ms_per_example = 15.0
    tuned = arm("LoRA", refs[:90] + ["a"] * 10, refs, tokens=34.0, model=f"{MODEL} + adapter")
    tuned.ms_per_example = 244.0  # the wall clock said 16x: machine noise, not compute
    few = arm("4-shot", refs[:70] + ["a"] * 30, refs, tokens=300.0)
    few.ms_per_example = 76.0
    comparison = build([zero, few, tuned])
    costs = {x.arm: x for x in comparison.costs}
    assert costs["LoRA"].cost_per_1000 == costs["zero-shot"].cost_per_1000
    assert costs["LoRA"].computed_tokens_per_query == 34.0 and costs["LoRA"].runs_on == MODEL
    assert costs["4-shot"].cost_per_1000 == pytest.approx(costs["zero-shot"].cost_per_1000 * 300 / 34)
    data = comparison.to_dict()
    assert all("computed_tokens_per_query" in a["cost"] for a in data["arms"])
    # a per-token time measured once for the model (the harness's ``ms_per_token``) is used as it is
    for r in (zero, few, tuned):
        r.ms_per_token = 0.25
    again = build([zero, few, tuned])
    assert {x.arm: x.ms_per_query for x in again.costs} == pytest.approx({"zero-shot": 8.5, "4-shot": 75.0,
                                                                          "LoRA": 8.5})


@pytest.mark.parametrize("relative", [0.0, 0.03, 0.09])
def test_break_even_is_none_when_costs_are_within_noise(relative):
    refs = ["a", "b"] * 50
    prompt = arm("zero-shot", refs[:70] + ["a"] * 30, refs, tokens=34.0)
    tuned = arm("LoRA", refs[:90] + ["a"] * 10, refs, tokens=34.0 * (1 - relative), model=f"{MODEL} + adapter")
    comparison = build([prompt, tuned])
    assert comparison.break_even is None
    assert c.break_even_queries(*comparison.costs) is None and c.same_cost(*comparison.costs)


def test_break_even_is_given_when_the_difference_is_beyond_noise():
    refs = ["a", "b"] * 50
    prompt = arm("4-shot", refs[:70] + ["a"] * 30, refs, tokens=300.0)
    tuned = arm("LoRA", refs[:90] + ["a"] * 10, refs, tokens=34.0, model=f"{MODEL} + adapter")
    comparison = build([prompt, tuned])
    assert comparison.break_even is not None and comparison.break_even > 0


def test_same_cost_is_judged_within_noise_in_the_choice():
    """Two arms the rows cannot separate and within the cost noise: the higher estimate wins, not the cheaper."""
    refs = ["a", "b"] * 100
    rng = np.random.default_rng(0)
    base = np.array(rng.uniform(0, 1, 200) < 0.75)
    other = base.copy()
    other[np.flatnonzero(~base)[:3]] = True  # three more right: not significant
    cheaper = arm("cheaper", with_predictions(refs, base, rng, ["a", "b"]), refs, tokens=33.0)
    better = arm("better", with_predictions(refs, other, rng, ["a", "b"]), refs, tokens=34.0)
    comparison = build([cheaper, better])
    assert comparison.recommendation.arm == "better"
    assert any("They cost the same per query" in r for r in comparison.recommendation.reasons)


# -- the cases the issue reported ------------------------------------------------------------------------

def six_emotions():
    """200 test rows, six unbalanced emotions; zero-shot 0.390, 4-shot 0.465 (exact McNemar p ~ 0.03),
    LoRA 0.475 with a far better macro-F1 than 4-shot (which mostly says 'joy')."""
    counts = {"joy": 70, "sadness": 58, "anger": 27, "fear": 24, "love": 16, "surprise": 5}
    refs = [label for label, n in counts.items() for _ in range(n)]
    idx = {label: [i for i, r in enumerate(refs) if r == label] for label in counts}
    rng = np.random.default_rng(12)
    # 4-shot: right on 70 joy + 23 sadness = 93 rows, says 'joy' everywhere else
    few = ["joy"] * len(refs)
    for i in idx["sadness"][:23]:
        few[i] = "sadness"
    # zero-shot: 78 right: 48 joy, 17 sadness, 13 anger; the rest split between joy and sadness
    # (28 rows only 4-shot gets right, 13 only zero-shot: exact McNemar p = 0.028)
    zero = ["sadness" if i % 2 else "joy" for i in range(len(refs))]
    for label, n in (("joy", 48), ("sadness", 17), ("anger", 13)):
        for i in idx[label][:n]:
            zero[i] = label
    for i in idx["joy"][48:]:
        zero[i] = "sadness"
    for i in idx["sadness"][17:]:
        zero[i] = "joy"
    # LoRA: 95 right, spread over every emotion; wrong answers spread too
    tuned = list(refs)
    right = {"joy": 35, "sadness": 28, "anger": 13, "fear": 11, "love": 6, "surprise": 2}
    labels = list(counts)
    for label, n in right.items():
        for i in idx[label][n:]:
            tuned[i] = labels[(labels.index(label) + 1 + int(rng.integers(5))) % 6]
    return refs, zero, few, tuned


def test_six_emotions_is_decided_on_macro_f1_and_never_picks_the_worse_zero_shot():
    refs, zero, few, tuned = six_emotions()
    results = [arm("zero-shot", zero, refs), arm("4-shot", few, refs, tokens=300.0),
               arm("LoRA", tuned, refs, model=f"{MODEL} + adapter")]
    acc = {r.arm: r.metrics["accuracy"] for r in results}
    assert acc == pytest.approx({"zero-shot": 0.390, "4-shot": 0.465, "LoRA": 0.475})
    comparison = build(results)
    assert comparison.metric == "macro_f1" and "unbalanced" in comparison.recommendation.rule["metric_reason"]
    assert comparison.recommendation.arm == "LoRA"
    # deciding on accuracy (the user's choice) it is not zero-shot either: 4-shot is significantly better than it
    on_accuracy = build(results, metric="accuracy")
    mcnemar = next(t for t in on_accuracy.tests if {t.a, t.b} == {"zero-shot", "4-shot"})
    assert 0.02 < mcnemar.p_value < 0.05
    assert on_accuracy.recommendation.arm != "zero-shot"
    for reason in on_accuracy.recommendation.reasons:
        assert "cannot confirm" not in reason and "ms per text" not in reason


def test_unbalanced_tweets_recommend_the_arm_with_the_better_macro_f1():
    counts = {"anger": 176, "joy": 110, "sadness": 84, "optimism": 30}
    refs = [label for label, n in counts.items() for _ in range(n)]
    idx = {label: [i for i, r in enumerate(refs) if r == label] for label in counts}
    few = ["anger"] * len(refs)  # 4-shot: mostly 'anger', never 'optimism'
    for i in idx["joy"][:19]:
        few[i] = "joy"
    tuned = list(refs)
    for label, wrong in (("anger", 50), ("joy", 45), ("sadness", 35), ("optimism", 15)):
        for i in idx[label][:wrong]:
            tuned[i] = "joy" if label != "joy" else "sadness"
    results = [arm("4-shot", few, refs, tokens=300.0), arm("LoRA", tuned, refs, model=f"{MODEL} + adapter")]
    assert results[0].metrics["accuracy"] == pytest.approx(0.4875) and results[1].metrics["accuracy"] > 0.6
    assert results[0].metrics["macro_f1"] < 0.35 and results[1].metrics["macro_f1"] > 0.55
    for priorities in (c.Priorities(), c.Priorities(among_equals="higher score"), c.Priorities(min_difference=10)):
        comparison = build(results, priorities=priorities)
        assert comparison.metric == "macro_f1"
        assert comparison.recommendation.arm == "LoRA"
    reason = build(results).recommendation.reasons[0]
    assert reason.startswith("LoRA has a macro-F1 of ") and ", 4-shot " in reason and "its " not in reason


def test_a_weak_zero_shot_arm_does_not_flip_lora_against_four_shot():
    """LoRA 0.80 vs 4-shot 0.78 (p = 0.04) recommends LoRA; adding a 0.50 zero-shot arm must not flip it."""
    rows = 1000
    refs = ["pos", "neg"] * (rows // 2)
    lora = np.zeros(rows, bool)
    lora[:800] = True
    few = lora.copy()
    few[745:800] = False  # 55 rows only LoRA gets right
    few[800:835] = True  # 35 rows only 4-shot gets right: 780 right, McNemar p = 0.044
    rng = np.random.default_rng(1)
    for tokens_few, tokens_lora in ((300.0, 34.0), (120.0, 300.0)):  # LoRA cheaper, then dearer, per query
        results = [arm("4-shot", with_predictions(refs, few, rng, ["pos", "neg"]), refs, tokens=tokens_few),
                   arm("LoRA", with_predictions(refs, lora, rng, ["pos", "neg"]), refs, tokens=tokens_lora,
                       model=f"{MODEL} + adapter")]
        assert results[1].metrics["accuracy"] == 0.80 and results[0].metrics["accuracy"] == 0.78
        two = build(results)
        assert two.tests[0].p_value == pytest.approx(0.044, abs=0.002)
        assert two.recommendation.arm == "LoRA"
        zero = arm("zero-shot", with_predictions(refs, np.arange(rows) % 2 == 0, rng, ["pos", "neg"]), refs,
                   tokens=30.0)
        three = build([zero] + results)
        assert three.recommendation.arm == "LoRA", three.recommendation.reasons
        # nor does an arm close behind LoRA at LoRA's cost (it would, if every comparison were corrected together)
        close = lora.copy()
        close[:10] = False
        shadow = arm("LoRA again", with_predictions(refs, close, rng, ["pos", "neg"]), refs, tokens=tokens_lora,
                     model=f"{MODEL} + adapter")
        assert build(results + [shadow]).recommendation.arm == "LoRA"


# -- rule, reasons and files ---------------------------------------------------------------------------------

def test_the_rule_is_in_the_json_and_reasons_name_both_arms():
    refs, zero, few, tuned = six_emotions()
    comparison = build([arm("zero-shot", zero, refs), arm("4-shot", few, refs, tokens=300.0),
                        arm("LoRA", tuned, refs, model=f"{MODEL} + adapter")], metric="accuracy")
    rule = comparison.to_dict()["recommendation"]["rule"]
    assert rule["metric"] == "accuracy" and rule["metric_setting"] == "accuracy"
    assert rule["min_difference_points"] == 1.0 and rule["alpha"] == 0.05 and rule["cost_noise"] == c.COST_NOISE
    assert len(rule["steps"]) == 4 and rule["metric_reason"] == "accuracy, as you chose."
    for reason in comparison.recommendation.reasons[:-1]:
        assert "its " not in reason
        assert sum(name in reason for name in ("zero-shot", "4-shot", "LoRA")) >= 2, reason


def test_not_separated_pairs_give_chances_and_rows_to_settle():
    rng = np.random.default_rng(5)
    refs = list(rng.choice(["x", "y"], 200))
    base = np.array(rng.uniform(0, 1, 200) < 0.7)
    other = base.copy()
    other[np.flatnonzero(~base)[:8]] = True
    other[np.flatnonzero(base)[:3]] = False
    a = arm("A", with_predictions(refs, base, rng, ["x", "y"]), refs, tokens=34.0)
    b = arm("B", with_predictions(refs, other, rng, ["x", "y"]), refs, tokens=300.0)
    rec = build([a, b]).recommendation
    assert rec.arm == "A"  # 2.5 points behind, not significant, and cheaper per query
    pair = rec.unsettled[0]
    assert pair["a"] == "A" and pair["b"] == "B" and 0 < pair["chance_a_better"] < 0.2
    assert pair["more_rows"] > 0
    text = next(r for r in rec.reasons if r.startswith("The test rows do not separate A and B"))
    assert "A answers right" in text and "more labelled test rows would settle it" in text
    assert "A costs less per query" in text


def test_a_comparison_saved_before_the_rule_still_loads(tmp_path):
    from pvf_core.demo import READY_MADE

    shutil.copyfile(READY_MADE, tmp_path / "comparison.json")
    old = json.loads((tmp_path / "comparison.json").read_text())
    assert "rule" not in old["recommendation"] and "quality" in old["priorities"]
    comparison = c.Comparison.load(tmp_path)
    assert comparison.recommendation.arm in [r.arm for r in comparison.results]
    assert comparison.recommendation.rule["steps"]
    assert comparison.metric in ("accuracy", "macro_f1")
    comparison.save(tmp_path / "again")
    again = c.Comparison.load(tmp_path / "again")
    assert again.recommendation == comparison.recommendation
    assert again.metrics_table().equals(comparison.metrics_table())


def test_an_arm_clearly_behind_a_third_arm_is_not_a_candidate_and_the_reason_says_who():
    rng = np.random.default_rng(2)
    rows = 200
    refs = list(rng.choice(["x", "y"], rows))
    q = np.array(rng.uniform(0, 1, rows) < 0.70)
    d = q.copy()
    d[np.flatnonzero(~q)[:12]] = True  # D = Q plus 12 corrections: clearly ahead of Q
    r = np.array(rng.uniform(0, 1, rows) < 0.5) | (np.array(rng.uniform(0, 1, rows) < 0.5) & q)
    r[np.flatnonzero(~r)[: max(0, int(0.74 * rows) - int(r.sum()))]] = True
    results = [arm("Q", with_predictions(refs, q, rng, ["x", "y"]), refs, tokens=20.0),
               arm("R", with_predictions(refs, r, rng, ["x", "y"]), refs, tokens=100.0),
               arm("D", with_predictions(refs, d, rng, ["x", "y"]), refs, tokens=300.0)]
    comparison = build(results)
    rec = comparison.recommendation
    assert clearly_ahead(comparison, "D", "Q") and not clearly_ahead(comparison, "R", "Q")
    assert rec.arm == "R" and set(rec.candidates) == {"R", "D"}
    acc = {x.arm: x.metrics["accuracy"] for x in results}
    assert f"Q is not a candidate: D answers right {acc['D']:.1%} of the time, Q {acc['Q']:.1%}, 6.0 points apart" in \
        " ".join(rec.reasons), rec.reasons
