"""Comparison maths against known values, and the recommendation's behaviour."""

from types import SimpleNamespace

import pandas as pd
import pytest

from pvf_core import compare as c


def result(arm, predictions, references, ms=10.0):
    return SimpleNamespace(arm=arm, predictions=predictions, references=references,
                           texts=[f"t{i}" for i in range(len(references))], ms_per_example=ms)


def test_mcnemar_exact_matches_binomial_table():
    # 1 row only A got right, 9 rows only B got right: two-sided exact p = 2 * P(X <= 1 | n=10, 1/2) = 22/1024
    a = [True] * 1 + [False] * 9 + [True] * 20
    b = [False] * 1 + [True] * 9 + [True] * 20
    assert c.mcnemar_exact(a, b) == (1, 9, pytest.approx(22 / 1024))


def test_mcnemar_identical_arms_is_not_significant():
    assert c.mcnemar_exact([True, False], [True, False]) == (0, 0, 1.0)


def test_paired_bootstrap_sees_a_clear_difference_and_not_a_null_one():
    refs = ["x"] * 200
    worse = ["x"] * 100 + ["y"] * 100
    better = ["x"] * 180 + ["y"] * 20
    acc = lambda r, p: float((pd.Series(list(r)) == pd.Series(list(p))).mean())
    boot = c.paired_bootstrap(acc, refs, worse, better, samples=500)
    assert boot["difference"] == pytest.approx(0.4)
    assert boot["low"] > 0.3 and boot["high"] < 0.5 and boot["p_value"] < 0.01
    same = c.paired_bootstrap(acc, refs, worse, worse, samples=200)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_wilson_interval_known_value():
    low, high = c.wilson_interval(80, 100)
    assert low == pytest.approx(0.7112, abs=1e-3) and high == pytest.approx(0.8666, abs=1e-3)


def test_compare_pair_sentence_names_the_numbers():
    refs = ["a"] * 100
    test = c.compare_pair(result("zero-shot", ["a"] * 60 + ["b"] * 40, refs),
                          result("LoRA", ["a"] * 90 + ["b"] * 10, refs), "classification")
    assert test.difference == pytest.approx(0.30) and test.significant
    assert "LoRA is better than zero-shot by 30.0 points" in test.sentence() and "unlikely to be luck" in test.sentence()


def test_compare_pair_refuses_different_rows():
    with pytest.raises(ValueError):
        c.compare_pair(result("a", ["x"], ["x"]), result("b", ["x"], ["y"]), "classification")


def test_costs_and_break_even_arithmetic():
    model = c.CostModel(price_per_hour=3.6, queries_per_month=1000, months=10)
    prompt = c.arm_cost("4-shot", ms_per_query=100, one_off_seconds=0, model=model)
    tuned = c.arm_cost("LoRA", ms_per_query=20, one_off_seconds=1000, model=model)
    # 100 ms at $3.6/h = $0.0001 per query -> $0.10 per 1,000
    assert prompt.cost_per_1000 == pytest.approx(0.10)
    assert tuned.cost_per_1000 == pytest.approx(0.02)
    assert tuned.one_off_cost == pytest.approx(1.0)
    assert tuned.monthly_cost == pytest.approx(0.02 + 0.1)
    # $1 of training saved at $0.00008 per query -> 12,500 queries
    assert c.break_even_queries(prompt, tuned) == pytest.approx(12_500)
    assert c.break_even_queries(tuned, prompt) is None


def test_cost_model_rejects_negative_price():
    with pytest.raises(Exception, match="at least 0"):
        c.CostModel(price_per_hour=-1)


def summaries_and_tests(score_prompt, score_tuned, p_value, ms_prompt=30, ms_tuned=30):
    model = c.CostModel()
    prompt = c.ArmSummary("zero-shot", "prompt", score_prompt, ms_prompt, c.arm_cost("zero-shot", ms_prompt, 0, model))
    tuned = c.ArmSummary("LoRA", "finetune", score_tuned, ms_tuned, c.arm_cost("LoRA", ms_tuned, 600, model))
    test = c.PairwiseTest("zero-shot", "LoRA", "accuracy", score_tuned - score_prompt, p_value, "exact McNemar",
                          details={"chance_b_better": 0.7, "standard_error": 0.02, "rows": 200})
    return [prompt, tuned], {("zero-shot", "LoRA"): test}


def test_a_tie_within_noise_goes_to_the_cheaper_arm():
    # the same cost per query: the higher estimate wins (the finished training is not a cost of choosing it)
    summaries, tests = summaries_and_tests(0.80, 0.82, p_value=0.4)
    rec = c.recommend(summaries, tests)
    assert rec.arm == "LoRA"
    assert rec.set_aside == {"zero-shot": "LoRA"}
    assert any(r.startswith("zero-shot is set aside: LoRA answers right 82.0% of the time, zero-shot 80.0%")
               and "it could easily be luck, p = 0.400" in r for r in rec.reasons), rec.reasons
    # zero-shot cheaper per query (beyond the noise): among arms the rows cannot separate, it wins
    summaries, tests = summaries_and_tests(0.80, 0.82, p_value=0.4, ms_tuned=60)
    rec = c.recommend(summaries, tests)
    assert rec.arm == "zero-shot"
    assert any("zero-shot costs less per query" in r and "chance that zero-shot is the better one is about 30%" in r
               for r in rec.reasons), rec.reasons


def test_a_significant_win_goes_to_the_winner_and_reasons_name_numbers():
    summaries, tests = summaries_and_tests(0.70, 0.88, p_value=0.001, ms_tuned=60)
    rec = c.recommend(summaries, tests, break_even=12_500)
    assert rec.arm == "LoRA"
    assert "LoRA answers right 88.0% of the time, zero-shot 70.0%: 18.0 points apart, unlikely to be luck " \
           "(p = 0.001)." in rec.reasons
    assert any("12,500" in w for w in rec.what_would_change)


def test_a_significant_gain_below_the_practical_threshold_does_not_separate():
    summaries, tests = summaries_and_tests(0.80, 0.83, p_value=0.01, ms_tuned=60)
    assert c.recommend(summaries, tests).arm == "LoRA"
    rec = c.recommend(summaries, tests, c.Priorities(min_difference=5.0))
    assert rec.arm == "zero-shot"
    assert any("below your threshold of 5" in r for r in rec.reasons), rec.reasons
    assert rec.rule["min_difference_points"] == 5.0


def test_nested_subsets_are_nested_and_stratified():
    train = pd.DataFrame({"text": [f"t{i}" for i in range(400)], "label": ["a"] * 300 + ["b"] * 100})
    subsets = c.nested_subsets(train, [16, 64, 256, 400], task="classification", seed=3)
    previous: set[str] = set()
    for n, frame in subsets.items():
        texts = set(frame["text"])
        assert len(frame) == n and previous <= texts
        previous = texts
        share_b = (frame["label"] == "b").mean()
        assert abs(share_b - 0.25) <= 1 / n + 1e-9
    assert c.nested_subsets(train, [16], task="classification", seed=3)[16].equals(subsets[16])


def test_learning_curve_sizes():
    assert c.learning_curve_sizes(500) == [16, 64, 256, 500]
    assert c.learning_curve_sizes(10) == [10]


def test_crossover_finds_where_finetuning_stays_ahead():
    curve = pd.DataFrame({"rows": [16, 16, 64, 64, 256, 256], "method": ["prompting", "fine-tuning"] * 3,
                          "score": [0.7, 0.5, 0.7, 0.72, 0.7, 0.85]})
    assert c.crossover(curve) == 64
    assert c.crossover(curve.assign(score=[0.7, 0.5, 0.7, 0.6, 0.7, 0.65])) is None


def test_disagreements_lists_only_rows_where_arms_differ():
    refs = ["a", "b", "a"]
    out = c.disagreements([result("x", ["a", "b", "b"], refs), result("y", ["a", "a", "a"], refs)])
    assert out["row"].tolist() == [1, 2]
    assert out["right"].tolist() == ["x", "y"]


def test_group_gaps():
    r = result("x", ["a", "a", "b", "b"], ["a", "a", "a", "a"])
    table = c.group_gaps(r, ["en", "en", "fr", "fr"]).set_index("group")
    assert table.loc["en", "accuracy"] == 1.0 and table.loc["fr", "gap_to_overall"] == -0.5


def fake_eval(arm, predictions, references, ms=10.0):
    from pvf_core.evaluate import EvalResult
    from pvf_core.metrics import classification_metrics

    labels = sorted(set(references) | set(predictions))
    return EvalResult(arm=arm, task="classification", n_test=len(references), metrics=classification_metrics(
        references, predictions, labels), texts=[f"<b>row {i}</b> =cmd" for i in range(len(references))],
        references=references, predictions=predictions, label_scores=None, ms_per_example=ms,
        latencies_ms=[ms] * len(references), prompt_tokens_per_row=50.0, peak_rss_mb=600.0, seconds=1.0,
        calibration="none")


def test_build_comparison_report_and_round_trip(tmp_path):
    from pvf_core.report import write_report

    refs = ["pos", "neg"] * 50
    zero = fake_eval("zero-shot", ["pos"] * 100, refs, ms=40)
    tuned = fake_eval("LoRA", refs[:90] + ["pos"] * 10, refs, ms=20)
    comparison = c.build_comparison([zero, tuned], [c.ArmInfo("zero-shot", "prompt"),
                                                     c.ArmInfo("LoRA", "finetune", train_seconds=300, train_rows=500)],
                                    task="classification", labels=["neg", "pos"], dataset="<script>x</script>")
    assert comparison.recommendation.arm == "LoRA"
    assert comparison.tests[0].significant
    assert comparison.break_even is not None and comparison.break_even > 0
    paths = write_report(comparison, tmp_path)
    page = open(paths["html"], encoding="utf-8").read()
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;b&gt;row" in page  # user text in the disagreement table is escaped
    predictions = pd.read_csv(paths["csv"])
    assert list(predictions.columns) == ["text", "label", "prediction_zero-shot", "prediction_LoRA"]
    assert predictions["text"].str.startswith("<b>").all()
    again = c.Comparison.load(tmp_path)
    assert again.recommendation == comparison.recommendation
    assert again.metrics_table().equals(comparison.metrics_table())


def test_exported_csv_neutralises_formulas(tmp_path):
    from pvf_core.report import write_safe_csv

    write_safe_csv(pd.DataFrame({"text": ["=1+1", "+cmd", "-2", "@SUM(A1)", "fine"]}), tmp_path / "x.csv")
    assert pd.read_csv(tmp_path / "x.csv")["text"].tolist() == ["'=1+1", "'+cmd", "'-2", "'@SUM(A1)", "fine"]


def test_scores_and_p_values_read_as_people_expect():
    assert c.p_text(3e-19) == "p < 0.001" and c.p_text(0.0321) == "p = 0.032"
    assert c.score_text(0.78, "accuracy") == "78.0% accuracy" and c.score_text(0.7998, "chrF") == "chrF 80.0"
    summaries, tests = summaries_and_tests(0.70, 0.88, p_value=1e-9)
    rec = c.recommend(summaries, tests)
    assert any("very unlikely to be luck (p < 0.001)" in r for r in rec.reasons), rec.reasons
    assert "p < 0.001" in tests[("zero-shot", "LoRA")].sentence()


def fake_text_eval(arm, inputs, predictions, references, ms=10.0):
    from pvf_core.evaluate import EvalResult
    from pvf_core.metrics import text_metrics

    return EvalResult(arm=arm, task="text-to-text", n_test=len(references), metrics=text_metrics(references, predictions),
                      texts=inputs, references=references, predictions=predictions, label_scores=None,
                      ms_per_example=ms, latencies_ms=[ms] * len(references), prompt_tokens_per_row=50.0,
                      peak_rss_mb=600.0, seconds=1.0, calibration="none")


def corrections(n=30):
    inputs = [f"she go to the market number {i} every day" for i in range(n)]
    references = [f"she goes to the market number {i} every day" for i in range(n)]
    return inputs, references


def test_an_arm_worse_than_leaving_the_text_unchanged_is_called_out():
    inputs, refs = corrections()
    garbled = [f"market day {i}" for i in range(len(refs))]
    arms = [fake_text_eval("zero-shot", inputs, garbled, refs), fake_text_eval("LoRA", inputs, garbled[:-5] + refs[-5:], refs)]
    comparison = c.build_comparison(arms, [c.ArmInfo("zero-shot", "prompt"), c.ArmInfo("LoRA", "finetune")],
                                    task="text-to-text", labels=[])
    first = comparison.recommendation.reasons[0]
    assert first.startswith(f"Careful: {comparison.recommendation.arm} scores worse than leaving the text unchanged")
    assert "p < 0.002 with 1,000 resamples" in first and "p < 0.001" not in first
    unchanged = comparison.to_dict()["unchanged_input"]
    assert unchanged["chrf"] > 80 and unchanged["exact_match"] == 0.0


def test_an_arm_that_improves_the_texts_says_so():
    inputs, refs = corrections()
    arms = [fake_text_eval("zero-shot", inputs, inputs, refs), fake_text_eval("LoRA", inputs, refs, refs)]
    comparison = c.build_comparison(arms, [c.ArmInfo("zero-shot", "prompt"), c.ArmInfo("LoRA", "finetune")],
                                    task="text-to-text", labels=[])
    assert comparison.recommendation.arm == "LoRA"
    assert comparison.recommendation.reasons[0].startswith("LoRA beats leaving the text unchanged: chrF ")
    assert "chrF 100.0" in comparison.recommendation.reasons[0]


def test_the_chrf_bootstrap_from_row_statistics_equals_rescoring_every_sample():
    from pvf_core.metrics import chrf_of_rows, chrf_statistics, text_metrics

    inputs, refs = corrections(25)
    a, b = inputs, refs[:20] + inputs[20:]
    assert chrf_of_rows(chrf_statistics(refs, a)) == pytest.approx(text_metrics(refs, a)["chrf"])
    slow = c.paired_bootstrap(lambda r, p: text_metrics(list(r), list(p))["chrf"] / 100, refs, a, b, samples=60)
    fast = c.paired_bootstrap_chrf(refs, a, b, samples=60)
    assert fast == pytest.approx(slow) and fast["difference"] > 0


def test_crossover_is_stated_with_its_uncertainty():
    from pvf_core.compare.curve import crossover_summary

    points = [(16, "prompting", 0.60), (16, "prompting", 0.62), (16, "fine-tuning", 0.50), (16, "fine-tuning", 0.55),
              (64, "prompting", 0.61), (64, "prompting", 0.66), (64, "fine-tuning", 0.64), (64, "fine-tuning", 0.70),
              (256, "prompting", 0.62), (256, "fine-tuning", 0.80)]
    curve = pd.DataFrame([{"rows": n, "method": m, "score": s} for n, m, s in points])
    found = crossover_summary(curve)
    assert found["rows"] == 64 and found["between"] == [16, 64] and not found["clear"]
    assert "between 16 and 64" in found["sentence"] and "uncertain" in found["sentence"]
    clear = crossover_summary(curve[curve["rows"] != 64])
    assert clear["rows"] == 256 and clear["clear"]


def test_an_adapter_arm_runs_on_its_base_model_whatever_its_folder_is_called():
    from types import SimpleNamespace

    from pvf_core.compare.costs import base_model

    wizard_run = SimpleNamespace(model="SmolLM2 + 12", base_model="")  # a wizard run's folder is its run number
    assert base_model(wizard_run) == "SmolLM2"
    assert base_model(SimpleNamespace(model="SmolLM2 + 12", base_model="bundled")) == "bundled"
