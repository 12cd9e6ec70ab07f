"""The training loop (``train_lora``) and what it returns (``TrainResult``)."""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import Splits
from ..errors import DataError
from .checks import finetune_warnings
from .lora import EAGER_ATTENTION_MAX_LENGTH, _set_attention, add_lora, train_dtype
from .loss import answer_loss
from .run import ADAPTER_FILES, FinetuneRun
from .schedule import ThreadChooser, _Tracker, eval_interval, learning_rate_at
from .settings import LoraSettings
from .tokens import Encoded, default_prompt, encode, frame_hash, length_grouped_batches

Progress = Callable[[dict], None]


# -- the result -------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What a training run produced and what it cost."""

    adapter_dir: Path | None
    settings: LoraSettings
    prompt: Any                        # the PromptSpec trained on (and to score with)
    model: str
    task: str
    labels: list[str]
    steps: int
    total_steps: int
    best_step: int
    best_val_loss: float | None
    best_val_accuracy: float | None
    stopped_early: bool
    cancelled: bool
    train_rows: int
    validation_rows: int
    train_examples: int                # examples processed (rows × epochs run)
    train_seconds: float               # the loop incl. validation checks, without loading the model
    validation_seconds: float          # of which the validation checks
    examples_per_second: float
    data_tokens: int                   # tokens of the examples processed (prefix counted per row)
    computed_tokens: int               # tokens actually run (the shared prefix once per batch)
    n_params: int
    n_trainable: int
    peak_rss_mb: float
    adapter_mb: float
    data_hash: str
    history: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    dtype: str = ""
    threads: int = 0                   # CPU threads the loop settled on (see ThreadChooser)

    def training_summary(self) -> dict:
        keys = ("steps", "total_steps", "best_step", "best_val_loss", "best_val_accuracy", "stopped_early",
                "cancelled", "train_rows", "validation_rows", "train_examples", "train_seconds", "validation_seconds",
                "examples_per_second", "data_tokens", "computed_tokens", "n_params", "n_trainable",
                "peak_rss_mb", "adapter_mb", "dtype", "threads")
        return {k: getattr(self, k) for k in keys}


# -- the training loop ------------------------------------------------------------------------------------

def train_lora(settings: LoraSettings, splits: Splits, model_name: str = "bundled",
               output_dir: str | Path | None = None, on_progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None, *, prompt: Any = None) -> TrainResult:
    """Train a LoRA adapter on ``splits.train``, validating on ``splits.validation``; save the best one.

    ``prompt`` is the (zero-shot) PromptSpec the rows are rendered with; it must be the spec the fine-tuned
    arm is later scored with (default: the generic instruction and the labels of ``splits``).
    ``should_stop()`` is checked before every step; a stopped run saves nothing and returns ``cancelled``.
    Runs unchanged under ``accelerate launch`` (data parallel: each process takes every n-th batch and
    the adapters' gradients are averaged).
    """
    import torch

    from ..models import load_model

    report: Progress = on_progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    started = time.perf_counter()
    accelerator = _accelerator()
    main = accelerator.is_main_process
    say = report if main else (lambda event: None)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)

    # -- data: the exact token ids the harness scores; a small validation subset -----------------------
    if len(splits.train) == 0:
        raise DataError("There are no training rows to fine-tune on.")
    spec = prompt if prompt is not None else default_prompt(splits)
    if splits.task == "classification" and not spec.labels:
        spec = spec.with_(labels=list(splits.labels))
    loaded = load_model(model_name, dtype=train_dtype(), fresh=True)
    tokenizer = loaded.tokenizer
    train, full_lengths = encode(splits.train, spec, tokenizer, settings.max_length)
    validation_frame = splits.validation.head(settings.validation_rows)
    val = encode(validation_frame, spec, tokenizer, settings.max_length)[0] if len(validation_frame) else None
    found = [w.to_dict() for w in finetune_warnings(splits, settings, full_lengths)]
    for w in found:
        say({"event": "warning", "code": w["code"], "message": w["message"], "time": time.time()})
    if any(w["level"] == "error" for w in found):
        raise DataError(next(w["message"] for w in found if w["level"] == "error"))

    # -- model: LoRA adapters on a private copy of the base model --------------------------------------
    device = accelerator.device
    if device.type == "cpu" and settings.max_length <= EAGER_ATTENTION_MAX_LENGTH:
        _set_attention(loaded.model, "eager")
    model = add_lora(loaded.model, settings).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in params)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    # -- optimizer and plan: steps, validation checks, early stopping ----------------------------------
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    world = accelerator.num_processes
    steps_per_epoch = max(1, math.ceil(len(train) / settings.batch_size) // world)
    total_steps = max(1, round(steps_per_epoch * settings.epochs))
    every = eval_interval(settings, steps_per_epoch)
    lengths = train.lengths()
    tracker = _Tracker(settings.patience)
    history: list[dict] = []
    validation_seconds = 0.0

    def validate(step: int, train_loss: float | None) -> tuple[float | None, float | None]:
        nonlocal validation_seconds
        if val is None:
            return None, None
        checked = time.perf_counter()
        loss, accuracy = validation_metrics(model, tokenizer, spec, val, pad_id, device, settings.batch_size)
        validation_seconds += time.perf_counter() - checked
        tracker.update(step, train_loss, loss, accuracy, model)
        warning = tracker.overfitting()
        if warning:
            say({**warning, "time": time.time()})
        return loss, accuracy

    def progress(step: int, train_loss: float | None, val_loss: float | None, val_accuracy: float | None,
                 lr: float, examples: int, loop_seconds: float) -> None:
        record = {"event": "progress", "step": step, "total_steps": total_steps,
                  "epoch": round(step / steps_per_epoch, 3), "train_loss": _round(train_loss),
                  "val_loss": _round(val_loss), "val_accuracy": _round(val_accuracy), "learning_rate": lr,
                  "examples_per_second": round(examples / loop_seconds, 3) if loop_seconds > 0 else None,
                  "percent": round(100 * step / total_steps, 1),
                  "eta_seconds": round(loop_seconds / step * (total_steps - step), 1) if step else None,
                  "time": time.time()}
        history.append(record)
        say(record)

    # -- the loop ----------------------------------------------------------------------------------------
    loop_started = time.perf_counter()
    val_loss, val_accuracy = validate(0, None)   # the untrained model: the baseline to beat
    progress(0, None, val_loss, val_accuracy, 0.0, 0, 0.0)
    step, examples, data_tokens, computed_tokens = 0, 0, 0, 0
    losses: list[float] = []
    stopped_early = cancelled = False
    last_report = time.perf_counter()
    threads = ThreadChooser(enabled=device.type == "cpu")
    model.train()
    for epoch in range(math.ceil(total_steps / steps_per_epoch)):
        batches = length_grouped_batches(lengths, settings.batch_size, settings.seed + epoch)
        batches = batches[:steps_per_epoch * world][accelerator.process_index::world]
        for rows in batches:
            if step >= total_steps:
                break
            if _all_agree(stop(), accelerator):
                cancelled = True
                break
            # learning rate for this step
            lr = learning_rate_at(step, total_steps, settings)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # forward, backward, average gradients over processes, clip, update
            threads.before_step(step)
            step_started = time.perf_counter()
            loss = answer_loss(model, train.prefix, [train.suffixes[i] for i in rows],
                               [train.answers[i] for i in rows], pad_id, device)
            loss.backward()
            if world > 1:
                _average_gradients(params, accelerator)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_tokens = len(train.prefix) + sum(lengths[i] - len(train.prefix) for i in rows)
            threads.after_step(time.perf_counter() - step_started, step_tokens)
            step += 1
            examples += len(rows) * world
            data_tokens += sum(lengths[i] for i in rows) * world
            computed_tokens += step_tokens * world
            losses.append(float(loss.detach()))
            # validation check: keep the best weights, stop early when it stops improving
            if step % every == 0 or step == total_steps:
                train_loss = float(np.mean(losses[-every:]))
                model.eval()
                threads.use_choice()
                val_loss, val_accuracy = validate(step, train_loss)
                model.train()
                progress(step, train_loss, val_loss, val_accuracy, lr, examples,
                         time.perf_counter() - loop_started)
                last_report = time.perf_counter()
                if tracker.should_stop():
                    stopped_early = True
                    say({"event": "warning", "code": "early_stopping", "time": time.time(),
                         "message": f"Stopped early at step {step}: the validation loss has not improved for "
                                    f"{settings.patience} checks; the best checkpoint (step {tracker.best_step}) "
                                    "is kept."})
                    break
            elif time.perf_counter() - last_report >= 1.0:
                progress(step, float(np.mean(losses[-10:])), None, None, lr, examples,
                         time.perf_counter() - loop_started)
                last_report = time.perf_counter()
        if cancelled or stopped_early:
            break
    train_seconds = time.perf_counter() - loop_started
    threads.restore()

    # -- keep the best checkpoint and save it ------------------------------------------------------------
    if tracker.best_weights:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in tracker.best_weights:
                    p.copy_(tracker.best_weights[name])
    adapter_dir = None
    adapter_mb = 0.0
    if not cancelled and output_dir is not None and main:
        adapter_dir = Path(output_dir)
        adapter_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(adapter_dir), safe_serialization=True)
        adapter_mb = round(sum((adapter_dir / f).stat().st_size for f in ADAPTER_FILES
                               if (adapter_dir / f).is_file()) / 2**20, 3)
    accelerator.wait_for_everyone()
    result = TrainResult(
        adapter_dir=adapter_dir, settings=settings, prompt=spec, model=model_name, task=splits.task,
        labels=list(spec.labels), steps=step, total_steps=total_steps, best_step=tracker.best_step,
        best_val_loss=_round(tracker.best_loss if tracker.checks else None),
        best_val_accuracy=_round(tracker.best_accuracy), stopped_early=stopped_early, cancelled=cancelled,
        train_rows=len(splits.train), validation_rows=len(val) if val is not None else 0,
        train_examples=examples, train_seconds=round(train_seconds, 3),
        validation_seconds=round(validation_seconds, 3),
        examples_per_second=round(examples / train_seconds, 3) if train_seconds > 0 else 0.0,
        data_tokens=data_tokens, computed_tokens=computed_tokens, n_params=n_params, n_trainable=n_trainable,
        peak_rss_mb=_peak_rss_mb(), adapter_mb=adapter_mb,
        data_hash=frame_hash(splits.train, splits.validation), history=history, warnings=found,
        dtype=str(loaded.dtype).replace("torch.", ""), threads=threads.choice)
    if adapter_dir is not None:
        FinetuneRun.from_result(result, time.perf_counter() - started).save(adapter_dir)
    del model, loaded, optimizer
    return result


def validation_metrics(model: Any, tokenizer: Any, spec: Any, val: Encoded, pad_id: int, device: Any,
                       batch_size: int) -> tuple[float, float | None]:
    """Validation loss (as in training) and, for classification, accuracy by the harness's label scoring."""
    import torch

    rows = list(range(len(val)))
    if spec.task == "classification":
        from ..evaluate import score_labels
        from ..prompting import Renderer

        renderer = Renderer(spec.with_(shots=0, example_ids=[]), tokenizer)
        label_answers = [renderer.answer_ids(label) for label in spec.labels]
        prompts = [val.prefix + s for s in val.suffixes]
        scores = score_labels(_Loaded(model, tokenizer), prompts, label_answers)  # mean log-prob per token
        gold = [label_answers.index(a) if a in label_answers else -1 for a in val.answers]
        known = [i for i in rows if gold[i] >= 0]
        if known:
            loss = float(-np.mean([scores[i, gold[i]] for i in known]))
            accuracy = float(np.mean([scores[i].argmax() == gold[i] for i in known]))
            return loss, accuracy
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size * 2):
            chunk = rows[start:start + batch_size * 2]
            loss = answer_loss(model, val.prefix, [val.suffixes[i] for i in chunk], [val.answers[i] for i in chunk],
                               pad_id, device)
            total += float(loss) * len(chunk)
    return total / max(len(rows), 1), None


@dataclass
class _Loaded:
    """The minimal LoadedModel shape the harness's scoring functions read."""

    model: Any
    tokenizer: Any


def _accelerator() -> Any:
    """accelerate's Accelerator: one process here; several under ``accelerate launch``."""
    from accelerate import Accelerator

    return Accelerator(cpu=not _cuda_available())


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def is_main_process() -> bool:
    """False in the helper processes of ``accelerate launch`` (they train, but do not log, save or score)."""
    return os.environ.get("RANK", "0") == "0"


def _all_agree(flag: bool, accelerator: Any) -> bool:
    """True if any process says so (a stop request seen by one process stops all of them together)."""
    if accelerator.num_processes == 1:
        return flag
    import torch

    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), reduction="sum") > 0)


def _average_gradients(params: list, accelerator: Any) -> None:
    """Average the adapters' gradients over the processes (one all-reduce of a flat vector)."""
    import torch

    flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                      for p in params])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is not None:
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def _round(value: float | None, digits: int = 5) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

