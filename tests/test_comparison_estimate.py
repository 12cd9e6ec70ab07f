"""The standard comparison's estimate: the tokens it counts are the harness's, its parts follow the work, and a
finished comparison keeps predicted beside actual (tiny random model)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pvf_core.cli import cli
from pvf_core.compare import estimate as est
from pvf_core.data import Splits
from pvf_core.evaluate import Arm, evaluate
from pvf_core.finetune import preset_settings
from pvf_core.prompting import PromptSpec

from conftest import toy_reviews

SPEED = est.Speed(ms_per_token=2.0, ms_per_query=50.0)


def splits(train: int = 120, test: int = 30) -> Splits:
    return Splits(train=toy_reviews(train, seed=1), validation=toy_reviews(20, seed=2),
                  test=toy_reviews(test, seed=3), task="classification")


@pytest.mark.parametrize("shots,selection", [(0, "balanced"), (4, "balanced"), (2, "similar")])
def test_counted_tokens_are_the_tokens_the_harness_computes(tiny_model, shots, selection):
    data = splits()
    spec = PromptSpec(labels=["negative", "positive"], shots=shots, selection=selection, calibration="none")
    result = evaluate(Arm("a", spec, model="tiny"), data.test, task="classification", train=data.train,
                      loaded=tiny_model)
    counted = est.scoring_tokens(spec, tiny_model.tokenizer, tiny_model.context_length, list(data.test["text"]),
                                 pool=data.train)
    per_row = (counted["prefix"] + counted["own"] + counted["answer"]) / counted["rows"]
    assert per_row == pytest.approx(result.computed_tokens_per_row, rel=1e-9)


def test_parts_follow_the_work(tiny_model, tiny_model_dir):
    def plan(**changes):
        arguments = {"model": str(tiny_model_dir), "shots": (0, 4), "limit": 30, "loaded": tiny_model,
                     "speed": SPEED, "start_seconds": 5.0, "lora": preset_settings("balanced", epochs=1),
                     "sample": 0} | changes
        return est.estimate_comparison(arguments.pop("data", splits()), **arguments)

    base = plan()
    assert set(base.parts) == {"start-up", "prompting", "fine-tuning", "scoring the fine-tuned model", "report"}
    assert base.seconds == pytest.approx(sum(base.parts.values()), abs=0.2)
    assert base.parts["start-up"] == 5.0
    assert base.parts["prompting"] == pytest.approx(base.arms["zero-shot"] + base.arms["4-shot balanced"], abs=0.2)
    assert base.arms["4-shot balanced"] > base.arms["zero-shot"]  # the same rows with 4 examples in the prompt
    assert plan(limit=15).parts["prompting"] < base.parts["prompting"]
    assert plan(lora=preset_settings("balanced", epochs=2)).parts["fine-tuning"] > 1.5 * base.parts["fine-tuning"] \
        - base.training["load_seconds"]
    assert plan(shots=(0,)).parts["prompting"] < base.parts["prompting"]
    slower = plan(speed=est.Speed(ms_per_token=4.0, ms_per_query=100.0))
    assert slower.parts["prompting"] == pytest.approx(2 * base.parts["prompting"], rel=0.01)
    assert plan(learning_curve=True).parts["learning curve"] > 0
    assert plan(search_seconds=60.0).parts["prompt search"] > 60.0
    summary = base.summary()
    assert summary["seconds"] == base.seconds and summary["parts"] == base.parts and summary["ms_per_token"] == 2.0


def test_the_speed_is_measured(tiny_model):
    speed = est.measure_speed(tiny_model)
    assert speed.ms_per_token > 0 and speed.ms_per_query > 0
    assert est.measure_speed(tiny_model, ms_per_token=1.5).ms_per_token == 1.5  # a job passes the harness's


def test_stage_clock_times_each_stage(monkeypatch):
    now = {"t": 10.0}
    monkeypatch.setattr(est.time, "perf_counter", lambda: now["t"])
    seen = []
    clock = est.StageClock(lambda d, t, m: seen.append(m))
    for at, message in ((12.0, "prompting: Scored 5/10 rows"), (15.0, "prompting: Scored 10/10 rows"),
                        (40.0, "fine-tuning: step 3/3"), (47.5, "scoring the fine-tuned model: Scored 10/10 rows")):
        now["t"] = at
        clock(1, 1, message)
    assert seen[-1].startswith("scoring")
    assert clock.parts(started=4.0, finished=50.0) == {"start-up": 6.0, "prompting": 5.0, "fine-tuning": 25.0,
                                                       "scoring the fine-tuned model": 7.5, "report": 2.5}
    now["t"] = 49.0  # the last stage's latency rows and building the comparison, after its last report
    clock.stop()
    assert clock.parts(started=4.0, finished=50.0) == {"start-up": 6.0, "prompting": 5.0, "fine-tuning": 25.0,
                                                       "scoring the fine-tuned model": 9.0, "report": 1.0}


def test_cli_estimate_and_a_finished_comparison_keeps_predicted_and_actual(toy_csvs, tiny_model_dir, tmp_path):
    from pvf_core.store import Store

    train, test = toy_csvs
    common = ["--train", str(train), "--test", str(test), "--model", str(tiny_model_dir), "--max-train", "60",
              "--limit", "12", "--shots", "0", "--epochs", "1", "--json"]
    done = CliRunner().invoke(cli, ["compare", "--estimate", *common])
    assert done.exit_code == 0, done.output
    planned = json.loads(done.stdout)
    assert planned["estimate"]["seconds"] == planned["seconds"] > 0
    assert {"start-up", "prompting", "fine-tuning", "scoring the fine-tuned model"} <= set(planned["parts"])
    assert planned["training"]["train_rows"] + planned["training"]["validation_rows"] <= 60
    assert not list(Store().list_runs(kind="compare"))  # estimating runs nothing

    done = CliRunner().invoke(cli, ["compare", *common, "--output", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["predicted_seconds"] == result["estimate"]["seconds"] > 0
    assert set(result["predicted_parts"]) <= set(result["actual_parts"])
    assert sum(result["actual_parts"].values()) == pytest.approx(result["seconds"], abs=1.0)
    (run,) = Store().list_runs(kind="compare")
    assert run.timings["predicted_seconds"] == result["predicted_seconds"]
    assert run.timings["actual_parts"] == result["actual_parts"]


def test_training_counts_twice_a_scored_token_where_both_use_one_dtype(monkeypatch, workspace):
    import torch

    from pvf_core import models

    monkeypatch.setattr(models, "scoring_dtype", lambda: torch.float32)
    monkeypatch.setattr(models, "best_dtype", lambda: torch.bfloat16)  # a CPU with native bf16: trains narrower
    assert est.train_token_factor() == est.TRAIN_TOKEN_FACTOR == 1.0
    monkeypatch.setattr(models, "best_dtype", lambda: torch.float32)   # no bf16: trains in float32 too
    assert est.train_token_factor() == est.SAME_DTYPE_TRAIN_TOKEN_FACTOR == 2.0
    # the factor is kept with the speed, so the wizard's estimate (no model loaded) counts training the same way
    est.remember_speed("some-model", est.Speed(ms_per_token=3.0, ms_per_query=0.0, train_factor=2.0))
    assert est.training_token_seconds("some-model") == pytest.approx(0.006)
