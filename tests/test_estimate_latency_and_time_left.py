"""The comparison estimate's latency rows (single queries: a fixed part measured on the real prompts plus own
tokens) and a running comparison's time left from its estimate (tiny random model; arithmetic by hand)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pvf_core import evaluate as harness
from pvf_core.compare import estimate as est
from pvf_core.compare import run as compare_run
from pvf_core.data import Splits
from pvf_core.finetune import preset_settings
from pvf_core.prompting import PromptSpec

from conftest import toy_reviews

PREDICTED = {"start-up": 10.0, "prompting": 40.0, "fine-tuning": 100.0, "scoring the fine-tuned model": 20.0,
             "report": 3.0}


def test_copied_constants_match_the_harness():
    assert est.LATENCY_ROWS == harness.LATENCY_ROWS
    assert est.PRUNE_FROM_LABELS == harness.PRUNE_FROM_LABELS


def test_latency_rows_cost_a_fixed_part_plus_their_own_tokens():
    speed = est.Speed(ms_per_token=1.0, ms_per_query=100.0, query_ms_per_token=2.0)
    assert speed.query_fixed_ms == pytest.approx(100 - 32 * 2)  # the probe query's 32 own tokens at 2 ms
    counted = {"rows": 3, "prefix": 50, "own": 60, "answer": 6.0, "generated": 0.0, "own_first": [10, 20, 30]}
    # per query: fixed 36 + 2 answer tokens x 2 ms, then its own tokens x 2 ms
    assert est.latency_seconds(counted, speed) == pytest.approx((3 * 40 + 2 * 60) / 1000)
    assert est.latency_seconds(counted, speed, fixed_ms=10.0) == pytest.approx((3 * 10 + 2 * 60) / 1000)
    assert est.latency_seconds(counted, speed, rows=2, fixed_ms=10.0) == pytest.approx((2 * 10 + 2 * 30) / 1000)
    generating = counted | {"answer": 0.0, "generated": 12.0}  # 4 tokens per row, each one more pass of one token
    assert est.latency_seconds(generating, speed) == pytest.approx((3 * 36 + 2 * 60 + 3 * 4 * (36 + 2)) / 1000)


def test_the_slope_and_the_fixed_part_stay_bounded():
    assert est.query_slope(50.0, 178.0, 0.5) == pytest.approx(1.0)    # (178 - 50) / (160 - 32)
    assert est.query_slope(110.0, 100.0, 0.5) == 0.5                  # noise: never below the batched cost
    assert est.query_slope(0.0, 320.0, 0.5) == pytest.approx(2.0)     # never a negative fixed part
    speed = est.Speed(ms_per_token=1.0, ms_per_query=80.0, query_ms_per_token=2.0)
    assert est.fixed_query_ms([(10, 50.0), (20, 70.0), (30, 200.0)], speed) == pytest.approx(30.0)  # median
    assert est.fixed_query_ms([(40, 10.0)], speed) == 0.0
    assert est.fixed_query_ms([], speed) is None


def test_sampled_queries_are_the_harness_latency_rows(tiny_model):
    data = toy_reviews(12, seed=3)
    spec = PromptSpec(labels=["negative", "positive"], shots=2, selection="balanced", calibration="none")
    prompts, answers = est.render(spec, tiny_model.tokenizer, tiny_model.context_length, list(data["text"]),
                                  pool=toy_reviews(40, seed=1))
    counted = est.scoring_tokens(spec, tiny_model.tokenizer, tiny_model.context_length, list(data["text"]),
                                 rendered=(prompts, answers))
    samples = est.sample_queries(tiny_model, prompts, answers, labels=2)
    assert len(samples) == est.LATENCY_SAMPLE
    assert [own for own, _ in samples] == counted["own_first"][1:1 + est.LATENCY_SAMPLE]  # after a warm-up query
    assert all(ms > 0 for _, ms in samples)
    assert len(counted["own_first"]) == min(est.LATENCY_ROWS, len(data))


def test_the_estimate_times_each_arms_latency_rows(tiny_model, tiny_model_dir):
    data = Splits(train=toy_reviews(60, seed=1), validation=toy_reviews(10, seed=2), test=toy_reviews(20, seed=3),
                  task="classification")
    speed = est.Speed(ms_per_token=2.0, ms_per_query=80.0, query_ms_per_token=2.0)
    planned = est.estimate_comparison(data, model=str(tiny_model_dir), shots=(0, 2), loaded=tiny_model, speed=speed,
                                      start_seconds=1.0, lora=preset_settings("balanced", epochs=1))
    assert set(planned.latency) == {"zero-shot", "2-shot balanced", "LoRA r=8"} == set(planned.query_fixed_ms)
    for arm, seconds in planned.latency.items():
        assert 0 <= seconds <= planned.arms[arm]  # inside the arm's time
    assert planned.latency["LoRA r=8"] == planned.latency["zero-shot"]  # the same prompt, sampled once
    assert planned.summary()["latency"] == planned.latency
    assert any("Latency rows" in m for m in planned.messages)


def test_time_left_is_the_rest_of_the_estimate_at_the_pace_so_far():
    # at the start: the whole estimate but start-up, at pace 1
    assert est.time_left(PREDICTED, {}, "prompting", 0.0, 0.0) == (163.0, 1.0)
    # prompting took 80 s (predicted 40); fine-tuning half done in 100 s (50 predicted): pace 180 / 90 = 2
    left, pace = est.time_left(PREDICTED, {"start-up": 30.0, "prompting": 80.0}, "fine-tuning", 0.5, 100.0)
    assert pace == pytest.approx(2.0)  # start-up (measured, not predicted) does not count
    assert left == pytest.approx((50 + 20 + 3) * 2.0)
    # too little done to judge the pace: the estimate as it is
    assert est.time_left(PREDICTED, {}, "prompting", 0.05, 10.0) == (pytest.approx(38 + 123), 1.0)
    # a stall is kept within the limits
    assert est.time_left(PREDICTED, {"prompting": 400.0}, "fine-tuning", 0.0, 0.0)[1] == est.PACE_LIMITS[1]
    # faster than predicted
    left, pace = est.time_left(PREDICTED, {"prompting": 20.0}, "fine-tuning", 1.0, 50.0)
    assert pace == pytest.approx(0.5) and left == pytest.approx(23 * 0.5)


def test_stage_clock_maps_progress_onto_the_estimate(monkeypatch):
    now = {"t": 10.0}
    monkeypatch.setattr(est.time, "perf_counter", lambda: now["t"])
    predicted = {"start-up": 5.0, "prompting": 10.0, "fine-tuning": 30.0, "scoring the fine-tuned model": 10.0,
                 "report": 2.0}
    assert est.stage_weights(predicted) == {"prompting": 10.0, "fine-tuning": 30.0,
                                            "scoring the fine-tuned model": 10.0}
    clock = est.StageClock(predicted=predicted)
    assert clock.time_left() is None  # nothing reported yet
    now["t"] = 30.0
    clock(200, 1000, "prompting: zero-shot done")  # 10 of 50 weighted seconds: the end of prompting
    now["t"] = 50.0
    clock(500, 1000, "fine-tuning: step 1/2")      # 25 of 50: half of fine-tuning
    left, pace = clock.time_left()
    # done: prompting 20 s (10 predicted) + half of fine-tuning in 20 s (15 predicted) -> pace 40 / 25
    assert pace == pytest.approx(1.6)
    assert left == pytest.approx((15 + 10 + 2) * 1.6)
    assert est.StageClock().time_left() is None  # no estimate, no time left from it


def test_run_comparison_weighs_its_progress_by_the_estimate(monkeypatch):
    seen = []
    stages = compare_run._Stages({"prompting": 10.0, "fine-tuning": 30.0}, lambda d, t, m: seen.append(d / t))
    stages.step("prompting")(1, 1, "done")
    stages.step("fine-tuning")(1, 2, "step 1/2")
    assert seen == [pytest.approx(0.25), pytest.approx(0.625)]


def test_a_comparison_job_reports_time_left_from_its_estimate(toy_csvs, tiny_model_dir, tmp_path):
    from pvf_core import jobs
    from pvf_core.store import Store

    train, test = toy_csvs
    done = CliRunner().invoke(cli_group(), ["compare", "--train", str(train), "--test", str(test), "--model",
                                            str(tiny_model_dir), "--max-train", "60", "--limit", "12", "--shots",
                                            "0", "--epochs", "1", "--json", "--output", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert set(result["predicted_latency"]) == set(result["actual_latency"]) == {"zero-shot", "LoRA r=8"}
    assert all(seconds > 0 for seconds in result["actual_latency"].values())
    (run,) = Store().list_runs(kind="compare")
    assert run.timings["predicted_latency"] == result["predicted_latency"]
    progress = [e for e in jobs.read_progress(run.id) if e.get("event") == "progress"]
    assert progress and all("pace" in e and e["eta_seconds"] is not None for e in progress)
    assert progress[-1]["eta_seconds"] < progress[0]["eta_seconds"]


def test_the_progress_text_says_how_the_time_left_was_made():
    from pvf_core.jobs import JobStatus
    from ui.job_view import _progress

    status = JobStatus(run_id=1, status="running", percent=40.0, eta_seconds=150.0, pace=1.3)
    _, text = _progress(status, [{"event": "progress", "message": "fine-tuning: step 3/10"}])
    assert text == ("40% · fine-tuning: step 3/10 · about 2 min left "
                    "(by the estimate, the work so far taking 1.3× its predicted time)")
    status.pace = 1.02
    text = _progress(status, [{"message": "prompting: Scored 4/8 rows"}])[1]
    assert text.endswith("(by the estimate, on pace so far)")


def cli_group():
    from pvf_core.cli import cli

    return cli


def test_a_training_runs_details_show_its_training_predicted_against_actual():
    from streamlit.testing.v1 import AppTest

    def page():
        from ui.finetune_result import _predicted_against_actual

        _predicted_against_actual({"predicted_seconds": 120.0, "predicted_peak_mb": 2048.0, "predicted_rough": True,
                                   "predicted_train_seconds": 80.0, "train_seconds": 95.0, "seconds": 150.0,
                                   "peak_rss_mb": 2560.0})

    at = AppTest.from_function(page).run()
    assert [c.value for c in at.caption] == [
        "Predicted (rough guess) against actual: 120 s against 150 s (training 80 s against 95 s); peak memory "
        "2.0 GB against 2.5 GB."]


def test_a_comparisons_details_show_its_latency_rows_predicted_against_actual():
    from streamlit.testing.v1 import AppTest

    def page():
        from ui.estimates import predicted_against_actual

        predicted_against_actual({"predicted_seconds": 100.0, "seconds": 120.0,
                                  "predicted_parts": {"prompting": 40.0, "fine-tuning": 60.0},
                                  "actual_parts": {"prompting": 50.0, "fine-tuning": 70.0},
                                  "predicted_latency": {"zero-shot": 3.0}, "actual_latency": {"zero-shot": 4.5}})

    at = AppTest.from_function(page).run()
    table = at.dataframe[0].value
    assert list(table["part"]) == ["prompting", "fine-tuning", "  of which zero-shot's latency rows"]
    assert list(table["took (s)"]) == [50.0, 70.0, 4.5]


def test_the_training_estimate_uses_the_kept_speed(tiny_model_dir, workspace):
    assert est.training_token_seconds(str(tiny_model_dir)) is None  # nothing kept, nothing to load
    est.remember_speed(str(tiny_model_dir), est.Speed(ms_per_token=3.0, ms_per_query=0.0))
    assert est.training_token_seconds(str(tiny_model_dir)) == pytest.approx(est.TRAIN_TOKEN_FACTOR * 0.003)
    assert est.remembered_speed(str(tiny_model_dir), max_age_s=-1) is None  # too old


def test_bench_estimates_quick_prints_every_stages_ratio(tiny_model_dir, workspace, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT, dataset_path

    dataset_path("sst2_train.csv")  # skips without the shared data sets
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "PVF_HOME": str(workspace)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_estimates.py"), "--quick", "--model",
                           str(tiny_model_dir), "--json", str(tmp_path / "estimates.json")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "within ±30 %: comparison" in done.stdout
    for stage in ("prompting", "fine-tuning", "latency rows, zero-shot", "latency rows, all arms"):
        assert f"  {stage}" in done.stdout, done.stdout
    (row,) = json.loads((tmp_path / "estimates.json").read_text())
    assert set(row["latency_predicted"]) == set(row["latency_actual"]) == {"zero-shot", "1-shot similar", "LoRA r=8"}


def test_a_calibrations_measured_start_up_and_load_label_the_next_measure(workspace):
    from pvf_core.finetune import estimates as fte

    assert fte._startup("m") == {}
    fte._remember_startup("m", 60.0, {"load_seconds": 8.0, "steps_seconds": 12.0})
    assert fte._startup("m") == {"start_seconds": 40.0, "load_seconds": 8.0}  # 60 s in all less load and steps
    fte._remember_startup("m", 5.0, {"load_seconds": 8.0, "steps_seconds": 12.0})  # clock noise: at least 1 s
    assert fte._startup("m")["start_seconds"] == 1.0
    assert fte._startup("other") == {}


def test_with_many_labels_the_sampled_queries_are_pruned_as_the_harness_prunes(tiny_model, monkeypatch):
    from pvf_core import scoring

    labels = [f"topic {chr(97 + i)}{chr(97 + i)}" for i in range(est.PRUNE_FROM_LABELS + 3)]
    spec = PromptSpec(labels=labels, calibration="none")
    texts = [f"row {i} about things" for i in range(8)]
    prompts, answers = est.render(spec, tiny_model.tokenizer, tiny_model.context_length, texts)
    seen = []
    real = scoring.one_query_at_a_time

    def spy(*args, **kwargs):
        seen.append(kwargs.get("prune_bias"))
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "one_query_at_a_time", spy)
    samples = est.sample_queries(tiny_model, prompts, answers, labels=len(labels))
    assert len(samples) == est.LATENCY_SAMPLE and all(ms > 0 for _, ms in samples)
    assert seen[0].shape == (1, len(labels)) and not seen[0].any()  # the raw prediction's bias: zeros
    seen.clear()
    est.sample_queries(tiny_model, prompts, answers, labels=2)
    assert seen == [None]  # few labels: every label scored, as the harness does
