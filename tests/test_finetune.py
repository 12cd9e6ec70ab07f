"""LoRA fine-tuning: settings and presets, the loss, the loop's guards, save/reload, estimates."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import pandas as pd
import pytest

from pvf_core import finetune
from pvf_core.data import Splits
from pvf_core.errors import SettingsError
from pvf_core.finetune import (PRESETS, FinetuneRun, LoraSettings, ThreadChooser, _Tracker, answer_loss, encode,
                               finetune_warnings, learning_rate_at, preset_settings, train_lora)

from conftest import dataset_path, toy_reviews


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_splits(n_train: int = 64, n_val: int = 16, n_test: int = 16) -> Splits:
    return Splits(train=toy_reviews(n_train, seed=1), validation=toy_reviews(n_val, seed=2),
                  test=toy_reviews(n_test, seed=3), task="classification")


def quick(**changes) -> LoraSettings:
    """Settings under which the tiny learner moves in a few steps."""
    values = {"epochs": 3, "learning_rate": 1e-2, "batch_size": 8, "target_modules": "all-linear", "dropout": 0.0,
              "patience": 0}
    return LoraSettings(**{**values, **changes})


# -- settings ---------------------------------------------------------------------------------------------

def test_every_setting_has_plain_help_and_a_range():
    for f in dataclasses.fields(LoraSettings):
        assert len(f.metadata.get("help", "")) > 40, f"{f.name} needs help text"
        if f.type in ("int", "float") and f.name != "seed":
            assert f.metadata.get("max") is not None, f"{f.name} needs a maximum"
    for key, preset in PRESETS.items():
        assert preset.summary and preset.name
        settings = preset_settings(key)
        assert all(getattr(settings, k) == v for k, v in preset.changes.items())


@pytest.mark.parametrize("changes, named", [({"learning_rate": 0.5}, "Learning rate"), ({"rank": 0}, "LoRA rank"),
                                            ({"dropout": 0.9}, "LoRA dropout"), ({"target_modules": " "}, "Adapted")])
def test_bad_settings_name_the_field(changes, named):
    with pytest.raises(SettingsError, match=named):
        LoraSettings(**changes)


def test_settings_round_trip_and_presets():
    settings = preset_settings("thorough", seed=3, rank=4)
    assert settings.rank == 4 and settings.seed == 3 and settings.target_modules == "all-linear"
    assert LoraSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    with pytest.warns(UserWarning, match="unknown"):
        assert LoraSettings.from_dict({"rank": 4, "colour": "red"}).rank == 4
    with pytest.raises(SettingsError, match="Unknown preset"):
        preset_settings("fastest")
    assert LoraSettings(epochs=2.0).epochs == 2 and LoraSettings(epochs=0.5).epochs == 0.5


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    settings = LoraSettings(learning_rate=1e-3, warmup=0.1)
    rates = [learning_rate_at(step, 100, settings) for step in range(100)]
    assert rates[0] < rates[5] < rates[9] <= 1e-3
    assert rates[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] == pytest.approx(1e-4, rel=0.05)


# -- the loss ---------------------------------------------------------------------------------------------

def test_rows_are_encoded_exactly_as_the_harness_renders_them(tiny_model):
    from pvf_core.prompting import PromptSpec, render_for_training

    spec = PromptSpec(task="classification", labels=["negative", "positive"])
    frame = toy_reviews(6)
    encoded, lengths = encode(frame, spec, tiny_model.tokenizer, max_length=512)
    assert len(encoded.prefix) > 5
    for i, (text, label) in enumerate(zip(frame["text"], frame["label"])):
        prompt, answer = render_for_training(spec, text, label, tiny_model.tokenizer)
        assert encoded.prefix + encoded.suffixes[i] == prompt
        assert encoded.answers[i] == answer
        assert lengths[i] == len(prompt) + len(answer)
    short = min(lengths) - 3  # every row must lose the end of its text
    cut, uncut = encode(frame, spec, tiny_model.tokenizer, max_length=short)
    assert uncut == lengths and cut.lengths() == [short] * len(frame)
    assert all(a == b for a, b in zip(cut.answers, encoded.answers))  # answers are never cut here
    with pytest.raises(SettingsError, match="too small"):
        encode(frame, spec, tiny_model.tokenizer, max_length=16)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_sharing_the_prefix_gives_the_same_loss_and_gradients(tiny_model_dir, attention, packed):
    """Both batch layouts (one packed sequence; the prefix once, then padded rows) must compute exactly
    what running every row in full, padded, computes."""
    import torch

    from pvf_core.models import load_model
    from pvf_core.prompting import PromptSpec

    loaded = load_model(str(tiny_model_dir), dtype=torch.float32, fresh=True)
    loaded.model.set_attn_implementation(attention)
    model = finetune.add_lora(loaded.model, LoraSettings(dropout=0.0, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # B starts at zero; make the adapters matter
    spec = PromptSpec(task="classification", labels=["negative", "positive"])
    encoded, _ = encode(toy_reviews(5), spec, loaded.tokenizer, 512)
    full = [encoded.prefix + s for s in encoded.suffixes]

    def loss_and_grads(prefix, suffixes, packed_max_tokens):
        model.zero_grad()
        loss = answer_loss(model, prefix, suffixes, encoded.answers, pad_id=0, packed_max_tokens=packed_max_tokens)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    shared_loss, shared_grads = loss_and_grads(encoded.prefix, encoded.suffixes, 10_000 if packed else 0)
    full_loss, full_grads = loss_and_grads([], full, 0)
    assert shared_loss == pytest.approx(full_loss, rel=1e-5)
    for a, b in zip(shared_grads, full_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


# -- the loop ---------------------------------------------------------------------------------------------

def test_loss_goes_down(tiny_learner_dir):
    events = []
    result = train_lora(quick(), toy_splits(), str(tiny_learner_dir), on_progress=events.append)
    checks = [e for e in events if e["event"] == "progress" and e["val_loss"] is not None]
    assert checks[0]["step"] == 0 and checks[-1]["step"] == result.steps == result.total_steps
    assert checks[-1]["val_loss"] < 0.6 * checks[0]["val_loss"]
    train_losses = [e["train_loss"] for e in checks[1:]]
    assert train_losses[-1] < 0.6 * train_losses[0]
    assert result.best_val_loss == min(e["val_loss"] for e in checks)
    assert result.adapter_dir is None  # no output folder asked for: nothing written
    progress = [e for e in events if e["event"] == "progress"]
    keys = {"step", "total_steps", "epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate",
            "examples_per_second", "percent", "eta_seconds", "time"}
    assert all(keys <= set(e) for e in progress)
    assert progress[-1]["percent"] == 100.0 and progress[-1]["eta_seconds"] == 0.0


def overfit_splits() -> Splits:
    """Training rows almost all 'positive', validation rows all 'negative': learning the first hurts the second."""
    train = pd.DataFrame([(f"Review number {i} of the film", "positive" if i % 12 else "negative") for i in range(48)],
                         columns=["text", "label"])
    validation = pd.DataFrame([(f"Another review {i} of a film", "negative") for i in range(16)],
                              columns=["text", "label"])
    return Splits(train=train, validation=validation, test=validation, task="classification")


def test_early_stopping_keeps_the_best_checkpoint_and_warns(tiny_learner_dir, tmp_path):
    events = []
    settings = quick(epochs=20, patience=2, eval_every=3, warmup=0.0)
    result = train_lora(settings, overfit_splits(), str(tiny_learner_dir), tmp_path / "run", on_progress=events.append)
    codes = [e["code"] for e in events if e["event"] == "warning"]
    assert result.stopped_early and result.steps < result.total_steps
    assert "early_stopping" in codes and "overfitting" in codes
    checks = {e["step"]: e["val_loss"] for e in events if e["event"] == "progress" and e["val_loss"] is not None}
    assert result.best_step < result.steps
    assert checks[result.best_step] == min(checks.values()) == result.best_val_loss
    assert all(step <= result.best_step + settings.patience * settings.eval_every for step in checks)
    # the saved adapter is the best checkpoint, not the last weights
    from pvf_core.evaluate import Arm, evaluate

    run = FinetuneRun.load(tmp_path / "run")
    assert run.training["best_step"] == result.best_step
    scored = evaluate(run.arm(), overfit_splits().validation, task="classification")
    assert scored.n_test == 16


def test_tracker_warns_only_when_validation_rises_while_training_falls():
    class Params:
        def named_parameters(self):
            return []

    tracker = _Tracker(patience=2)
    for step, (train, val) in enumerate([(1.0, 0.9), (0.8, 0.7), (0.6, 0.75), (0.5, 0.8)], start=1):
        tracker.update(step, train, val, None, Params())
    assert tracker.best_step == 2 and tracker.should_stop()
    assert "memorise" in tracker.overfitting()["message"] and tracker.overfitting() is None  # once
    calm = _Tracker(patience=0)
    for step, (train, val) in enumerate([(1.0, 0.9), (1.1, 0.95), (1.2, 1.0)], start=1):
        calm.update(step, train, val, None, Params())
    assert calm.overfitting() is None and not calm.should_stop()


def test_should_stop_cancels_without_saving(tiny_model_dir, tmp_path):
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    result = train_lora(quick(), toy_splits(), str(tiny_model_dir), tmp_path / "run", should_stop=stop)
    assert result.cancelled and result.steps == 3 and result.adapter_dir is None
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()


def test_warnings_before_training_reuse_the_health_check():
    splits = Splits(train=toy_reviews(40).assign(label=["positive"] * 38 + ["negative"] * 2),
                    validation=toy_reviews(5, seed=5), test=toy_reviews(10, seed=6), task="classification")
    codes = {w.code for w in finetune_warnings(splits, LoraSettings(max_length=20), lengths=[10, 25, 30])}
    assert {"small_for_finetuning", "few_rows_per_label", "class_imbalance", "small_validation", "rows_cut"} <= codes
    assert not {"small_for_finetuning", "rows_cut"} & {w.code for w in finetune_warnings(toy_splits(300, 40, 40))}


def test_thread_chooser_settles_on_the_faster_count(monkeypatch):
    import torch

    monkeypatch.delenv("PVF_THREADS")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    chooser = ThreadChooser(enabled=True)
    for step in range(8):
        chooser.before_step(step)
        one_thread = chosen[-1] == 1
        chooser.after_step(1.0 if one_thread else 5.0, tokens=100)  # a busy machine: one thread is faster
    assert chooser.choice == 1 and chosen[-1] == 1


# -- save, reload, zip, merge -----------------------------------------------------------------------------

def test_save_then_reload_gives_identical_predictions(tiny_learner_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from pvf_core.evaluate import evaluate

    splits = toy_splits()
    result = train_lora(quick(epochs=2), splits, str(tiny_learner_dir), tmp_path / "run")
    folder = result.adapter_dir
    assert {"adapter_model.safetensors", "adapter_config.json", "run.json", "README.md"} <= \
        {p.name for p in folder.iterdir()}
    run = FinetuneRun.load(folder)
    assert run.settings == result.settings and run.model == str(tiny_learner_dir)
    assert run.data["hash"] == result.data_hash and run.data["train_rows"] == 64
    arm = run.arm()
    assert arm.adapter == str(folder) and arm.prompt.labels == ["negative", "positive"]
    first = evaluate(arm, splits.test, task="classification")
    again = evaluate(FinetuneRun.load(folder).arm(), splits.test, task="classification")
    assert first.predictions == again.predictions and first.label_scores == again.label_scores
    run.with_evaluation(first)
    card = (folder / "README.md").read_text()
    assert "accuracy" in card and str(tiny_learner_dir) in card and "Intended use and limits" in card
    saved = load_file(str(folder / "adapter_model.safetensors"))
    assert saved and all(torch.isfinite(t).all() for t in saved.values())
    assert any(t.abs().sum() > 0 for name, t in saved.items() if "lora_B" in name)  # it learned something

    archive = finetune.zip_run(folder)
    with zipfile.ZipFile(archive) as z:
        assert set(z.namelist()) == {"adapter_model.safetensors", "adapter_config.json", "run.json", "README.md"}


def test_merged_model_predicts_like_the_adapter(tiny_learner_dir, tmp_path, monkeypatch):
    from pvf_core.evaluate import Arm, evaluate

    monkeypatch.setenv("PVF_DTYPE", "float32")  # compare the merge itself, not bf16 rounding of near-ties
    splits = toy_splits()
    result = train_lora(quick(epochs=2), splits, str(tiny_learner_dir), tmp_path / "run")
    arm = FinetuneRun.load(result.adapter_dir).arm()
    merged = finetune.merge_run(result.adapter_dir, tmp_path / "merged")
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    with_adapter = evaluate(arm, splits.test, task="classification")
    standalone = evaluate(Arm("merged", arm.prompt, model=str(merged)), splits.test, task="classification")
    assert standalone.predictions == with_adapter.predictions
    for a, b in zip(standalone.raw_label_scores, with_adapter.raw_label_scores):
        assert a == pytest.approx(b, abs=1e-4)


def test_a_folder_without_run_json_is_refused(tmp_path):
    from pvf_core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="run.json"):
        FinetuneRun.load(tmp_path)


# -- estimates --------------------------------------------------------------------------------------------

def test_estimate_measures_once_and_says_whether_it_fits(tiny_model_dir, monkeypatch):
    splits = toy_splits(64, 16, 16)
    settings = quick()
    rough = finetune.estimate(settings, splits, str(tiny_model_dir), calibrate=False)
    assert not rough.calibrated and "rough" in rough.messages[-1]
    measured = finetune.estimate(settings, splits, str(tiny_model_dir))
    assert measured.calibrated and measured.fits
    assert measured.steps == 24 and measured.train_rows == 64 and measured.validation_rows == 16
    # The calibration process's own peak: under 1 GB for this tiny model when run alone, but 2.8 GB (4.7 GB with
    # the margin) late in the full suite; not understood yet, so the bound only catches absurd estimates.
    assert 0 < measured.train_seconds < 60 and 100 < measured.peak_mb < 8000
    assert measured.total_seconds >= measured.train_seconds + measured.load_seconds
    cached = finetune.estimate(settings, splits, str(tiny_model_dir), calibrate=False)
    assert cached.calibrated and cached.peak_mb == measured.peak_mb
    longer = finetune.estimate(quick(epochs=6), splits, str(tiny_model_dir), calibrate=False)
    assert longer.train_seconds == pytest.approx(2 * measured.train_seconds, rel=0.1)
    monkeypatch.setattr(finetune, "CALIBRATION_MAX_AGE_S", 0)  # a stale measurement is measured again
    assert not finetune.estimate(settings, splits, str(tiny_model_dir), calibrate=False).calibrated


def test_the_plan_names_the_largest_packed_batch_for_the_memory_calibration(monkeypatch):
    encoded = finetune.Encoded(prefix=[1] * 10, suffixes=[[2] * n for n in range(5, 45)], answers=[[3, 4]] * 40)
    monkeypatch.setattr(finetune, "PACKED_MAX_TOKENS", 120)
    plan = finetune._plan(encoded, quick(batch_size=4))
    rows, width = plan["widest_packed"]
    packed_tokens = [t for t in plan["batch_tokens"] if t <= 120]
    assert rows * width + 10 == max(packed_tokens) and max(plan["batch_tokens"]) > 120
    monkeypatch.setattr(finetune, "PACKED_MAX_TOKENS", 0)
    assert finetune._plan(encoded, quick(batch_size=4))["widest_packed"] is None


def test_estimate_says_when_a_run_would_not_fit(tiny_model_dir, monkeypatch):
    measured = {"step_seconds": 0.01, "token_seconds": 1e-5, "forward_token_seconds": 3e-6, "load_seconds": 1.0,
                "peak_mb": 900.0}
    monkeypatch.setattr(finetune, "_calibration", lambda *args, **kwargs: measured)
    monkeypatch.setattr(finetune, "_available_mb", lambda: 500.0)
    found = finetune.estimate(quick(), toy_splits(), str(tiny_model_dir))
    assert not found.fits and found.peak_mb == pytest.approx(900.0 * finetune.CALIBRATION_MEMORY_MARGIN) and "would not fit" in " ".join(found.messages)
    monkeypatch.setattr(finetune, "_available_mb", lambda: 5000.0)
    assert finetune.estimate(quick(), toy_splits(), str(tiny_model_dir)).fits


# -- helpers of the wizard page ---------------------------------------------------------------------------

def test_cap_rows_keeps_the_first_training_and_test_rows_and_every_validation_row():
    splits = toy_splits(64, 16, 16)
    capped = finetune.cap_rows(splits, 10, 5)
    assert capped.sizes() == {"train": 10, "validation": 16, "test": 5}
    assert capped.train.equals(splits.train.head(10)) and capped.task == splits.task
    assert finetune.cap_rows(splits).sizes() == splits.sizes() == {"train": 64, "validation": 16, "test": 16}


def test_result_warnings_say_when_the_model_learned_nothing():
    good = {"accuracy": 0.8, "true_shares": {"a": 0.5, "b": 0.5}, "collapse": {"collapsed": False}}
    assert finetune.result_warnings(good) == []
    stuck = {"accuracy": 0.6, "true_shares": {"a": 0.6, "b": 0.4},
             "collapse": {"label": "a", "share": 0.95, "true_share": 0.6, "collapsed": True}}
    found = {w.code: w for w in finetune.result_warnings(stuck)}
    assert set(found) == {"no_better_than_majority", "collapsed"}
    assert "always answering 'a', which would get 60%" in found["no_better_than_majority"].message
    assert found["no_better_than_majority"].numbers["majority_share"] == 0.6
    assert "answers 'a' for 95% of the rows" in found["collapsed"].message
    assert finetune.result_warnings({"chrf": 40.0, "exact_match": 0.1}) == []


# -- the bundled model ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_short_run_on_sst2_beats_the_untrained_model(bundled_model, tmp_path, monkeypatch):
    """160 SST-2 rows, one epoch: the adapter must beat the same prompt without it on the same test rows."""
    from pvf_core.data import load_splits
    from pvf_core.evaluate import Arm, evaluate

    monkeypatch.delenv("PVF_THREADS")
    splits, _ = load_splits(dataset_path("sst2_train.csv"), dataset_path("sst2_test.csv"), max_train=160)
    test = splits.test.head(100)
    settings = LoraSettings(epochs=1, learning_rate=1e-3, max_length=128, eval_every=10)
    result = train_lora(settings, splits, "bundled", tmp_path / "run")
    run = FinetuneRun.load(result.adapter_dir)
    tuned = evaluate(run.arm(), test, task="classification")
    untrained = evaluate(Arm("zero-shot", run.prompt_spec()), test, task="classification", loaded=bundled_model)
    assert tuned.metrics["accuracy"] > untrained.metrics["accuracy"] + 0.05, (tuned.metrics["accuracy"],
                                                                            untrained.metrics["accuracy"])
    assert result.best_val_loss < result.history[0]["val_loss"]
