"""LoRA fine-tuning: settings, presets, estimates, the training loop and the run folder it leaves.

    LoraSettings, PRESETS, preset_settings(preset, **changes)                       settings.py
    finetune_warnings(splits, settings), result_warnings(metrics), cap_rows(...)    checks.py
    encode(frame, spec, tokenizer, max_length), length_grouped_batches(...)         tokens.py
    add_lora(model, settings), train_dtype()                                        lora.py
    answer_loss(model, prefix, suffixes, answers, pad_id) (packed / padded)         loss.py
    learning_rate_at, eval_interval, early stopping, ThreadChooser                  schedule.py
    train_lora(settings, splits, model_name, output_dir, on_progress, should_stop)  loop.py
    accelerate: one or several processes, sharded global batches                  processes.py
    TrainResult; FinetuneRun.load(folder).arm(), model_card, zip_run, merge_run     run.py
    estimate(settings, splits, model_name) -> Estimate (time, peak memory, fits?)   estimates.py

What is learned: a causal-LM LoRA adapter trained on exactly the token ids the evaluation harness scores
(``prompting.Renderer``: system message with instruction and label list, the row as the user turn, the
answer = verbalizer + end of turn), with the loss on the answer tokens only. The fine-tuned arm is then
scored by the same harness, on the same rows, by the same label log-likelihood (or generation) path as
the prompt arms, so the two sides differ only in what the adapter learned. This is the only formulation:
it works for classification and text-to-text alike, and measured as accurate as a classification head on
SST-2 here (see docs/finetuning.md for the numbers).

Speed (2 CPU cores): base weights in bfloat16 where the CPU computes it natively, LoRA weights and the
optimizer in float32; rows grouped by length and padded per batch; the prompt's shared prefix (system
message) runs once per batch and its key/value cache is expanded over the rows, as in the harness; the
49k-word vocabulary projection runs only at the positions that predict answer tokens. ``bench/
bench_finetune.py`` measures it against a plain ``Trainer`` script.

Progress is reported as dicts, one per event, in the JSON-lines format the job log uses::

    {"event": "progress", "step", "total_steps", "epoch", "train_loss", "val_loss", "val_accuracy",
     "learning_rate", "examples_per_second", "percent", "eta_seconds", "time"}
    {"event": "warning", "code", "message"}      {"event": "status", "status", "message"}
    {"event": "validation", "step", "val_accuracy", "message"}   (more than 20 labels: the kept adapter's
                                                                  accuracy, once after training)

The names below are re-exported, so ``from pvf_core.finetune import X`` works for all of them. Setting one of
them on this package (``monkeypatch.setattr(finetune, "PACKED_MAX_TOKENS", 120)``) sets it in the modules
that define or import it too, so a patched constant or helper is the one the code reads.
"""

from __future__ import annotations

import sys
import types

from . import checks, estimates, lora, loop, loss, processes, run, schedule, settings, tokens
from .checks import (MIN_TRAIN_PER_LABEL, MIN_TRAIN_ROWS, MIN_VALIDATION_ROWS, RELEVANT_HEALTH, cap_rows,
                     finetune_warnings, result_warnings)
from .estimates import (CALIBRATION_MAX_AGE_S, CALIBRATION_MEMORY_MARGIN, ROUGH_FLOPS, Estimate, _available_mb,
                        _calibrate_here, _calibration, _duration, _plan, estimate)
from .lora import EAGER_ATTENTION_MAX_LENGTH, _set_attention, add_lora, train_dtype
from .loop import LIVE_ACCURACY_MAX_LABELS, Progress, _Loaded, train_lora, validation_metrics
from .processes import (GlobalBatches, _accelerator, _all_agree, _cuda_available, _peak_rss_mb, data_loader,
                        is_main_process)
from .loss import PACKED_MAX_TOKENS, _packed_logits, _padded_logits, answer_loss
from .run import (ADAPTER_FILES, CARD_FILE, RUN_FILE, RUN_FORMAT, FinetuneRun, TrainResult, _round, _settings_table,
                  _versions, merge_run, model_card, zip_run)
from .schedule import ThreadChooser, _Tracker, eval_interval, learning_rate_at
from .settings import DEFAULT_PRESET, PRESETS, TARGET_CHOICES, LoraSettings, Preset, preset_settings
from .tokens import Encoded, common_prefix_length, default_prompt, encode, frame_hash, length_grouped_batches

_MODULES = (checks, estimates, lora, loop, loss, processes, run, schedule, settings, tokens)

__all__ = [
    "ADAPTER_FILES", "CALIBRATION_MAX_AGE_S", "CALIBRATION_MEMORY_MARGIN", "CARD_FILE", "DEFAULT_PRESET",
    "EAGER_ATTENTION_MAX_LENGTH", "MIN_TRAIN_PER_LABEL", "MIN_TRAIN_ROWS", "MIN_VALIDATION_ROWS",
    "PACKED_MAX_TOKENS", "PRESETS", "RELEVANT_HEALTH", "ROUGH_FLOPS", "RUN_FILE", "RUN_FORMAT", "TARGET_CHOICES",
    "Encoded", "Estimate", "FinetuneRun", "GlobalBatches", "LoraSettings", "Preset", "Progress", "ThreadChooser",
    "TrainResult", "add_lora", "answer_loss", "cap_rows", "common_prefix_length", "data_loader", "default_prompt",
    "encode", "estimate",
    "eval_interval", "finetune_warnings", "frame_hash", "is_main_process", "learning_rate_at",
    "length_grouped_batches", "merge_run", "model_card", "preset_settings", "result_warnings", "train_dtype",
    "train_lora", "validation_metrics", "zip_run", "LIVE_ACCURACY_MAX_LABELS",
]


class _Package(types.ModuleType):
    """This package's module type: setting a re-exported name also sets it in every submodule holding it."""

    def __setattr__(self, name: str, value: object) -> None:
        if not name.startswith("__"):
            for module in self.__dict__.get("_MODULES", ()):
                if name in module.__dict__:
                    setattr(module, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
