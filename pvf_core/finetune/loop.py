"""The training loop: ``train_lora`` reads top to bottom, one helper per block (nanoGPT's train.py, in parts).

    train_lora
      _load_rows        the exact token ids the harness scores, and the warnings before training
      _prepare          LoRA on a private model copy, optimizer, data loader: prepared by accelerate
      _run_steps        the loop: learning rate, forward/backward (gradients synced), clip, update, validate
      _keep_best_and_save
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import Splits
from ..errors import DataError
from ..evaluate import PRUNE_FROM_LABELS
from .checks import finetune_warnings
from .lora import EAGER_ATTENTION_MAX_LENGTH, _set_attention, add_lora, train_dtype
from .loss import answer_loss
from .processes import _accelerator, _all_agree, _peak_rss_mb, _summed, data_loader
from .run import ADAPTER_FILES, FinetuneRun, TrainResult, _round
from .schedule import ThreadChooser, _Tracker, eval_interval, learning_rate_at
from .settings import LoraSettings
from .tokens import Encoded, default_prompt, encode, frame_hash

# Up to this many labels each validation check also scores every label for its accuracy; from the count
# where the harness prunes, checks compute the loss and the kept adapter's accuracy is scored once, after
# training (_accuracy_of_kept_adapter).
LIVE_ACCURACY_MAX_LABELS = PRUNE_FROM_LABELS - 1

Progress = Callable[[dict], None]


def train_lora(settings: LoraSettings, splits: Splits, model_name: str = "bundled",
               output_dir: str | Path | None = None, on_progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None, *, prompt: Any = None) -> TrainResult:
    """Train a LoRA adapter on ``splits.train``, validating on ``splits.validation``; save the best one.

    ``prompt`` is the (zero-shot) PromptSpec the rows are rendered with; it must be the spec the fine-tuned
    arm is later scored with (default: the generic instruction and the labels of ``splits``).
    ``should_stop()`` is checked before every step; a stopped run saves nothing and returns ``cancelled``.
    Runs unchanged under ``accelerate launch`` (data parallel through accelerate: each process takes its
    piece of every global batch of ``batch_size × processes`` rows, gradients are synced; see processes.py).
    """
    import torch

    started = time.perf_counter()
    accelerator = _accelerator()
    report = on_progress or (lambda event: None)
    say = report if accelerator.is_main_process else (lambda event: None)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)

    rows = _load_rows(settings, splits, model_name, prompt, say)
    run = _prepare(settings, rows, accelerator, say)
    _run_steps(run, should_stop or (lambda: False))
    adapter_dir, adapter_mb = _keep_best_and_save(run, output_dir)
    _accuracy_of_kept_adapter(run)

    result = TrainResult(
        adapter_dir=adapter_dir, settings=settings, prompt=rows.spec, model=model_name, task=splits.task,
        labels=list(rows.spec.labels), steps=run.step, total_steps=run.total_steps,
        best_step=run.tracker.best_step,
        best_val_loss=_round(run.tracker.best_loss if run.tracker.checks else None),
        best_val_accuracy=_round(run.tracker.best_accuracy), stopped_early=run.stopped_early,
        cancelled=run.cancelled, train_rows=len(splits.train),
        validation_rows=len(rows.val) if rows.val is not None else 0, train_examples=int(run.examples),
        train_seconds=round(run.train_seconds, 3), validation_seconds=round(run.validation_seconds, 3),
        examples_per_second=round(run.examples / run.train_seconds, 3) if run.train_seconds > 0 else 0.0,
        data_tokens=int(run.data_tokens), computed_tokens=int(run.computed_tokens), n_params=run.n_params,
        n_trainable=run.n_trainable, peak_rss_mb=_peak_rss_mb(), adapter_mb=adapter_mb,
        data_hash=frame_hash(splits.train, splits.validation), history=run.history, warnings=rows.warnings,
        dtype=rows.dtype, threads=run.threads.choice, world_size=run.world, device=run.device.type)
    if adapter_dir is not None:
        FinetuneRun.from_result(result, time.perf_counter() - started).save(adapter_dir)
    return result


# -- data: the exact token ids the harness scores; a small validation subset ------------------------------

@dataclass
class _Rows:
    """What the run trains and validates on, and the model loaded for it."""

    spec: Any                          # the PromptSpec the rows are rendered with
    loaded: Any                        # models.LoadedModel: a private copy of the base model
    train: Encoded
    val: Encoded | None
    warnings: list[dict]
    dtype: str


def _load_rows(settings: LoraSettings, splits: Splits, model_name: str, prompt: Any, say: Progress) -> _Rows:
    from ..models import load_model

    if len(splits.train) == 0:
        raise DataError("There are no training rows to fine-tune on.")
    spec = prompt if prompt is not None else default_prompt(splits)
    if splits.task == "classification" and not spec.labels:
        spec = spec.with_(labels=list(splits.labels))
    loaded = load_model(model_name, dtype=train_dtype(), fresh=True)
    train, full_lengths = encode(splits.train, spec, loaded.tokenizer, settings.max_length)
    validation_frame = splits.validation.head(settings.validation_rows)
    val = encode(validation_frame, spec, loaded.tokenizer, settings.max_length)[0] if len(validation_frame) else None
    found = [w.to_dict() for w in finetune_warnings(splits, settings, full_lengths)]
    for w in found:
        say({"event": "warning", "code": w["code"], "message": w["message"], "time": time.time()})
    if any(w["level"] == "error" for w in found):
        raise DataError(next(w["message"] for w in found if w["level"] == "error"))
    return _Rows(spec, loaded, train, val, found, str(loaded.dtype).replace("torch.", ""))


# -- model, optimizer, data loader: LoRA on a private copy, prepared by accelerate -------------------------

@dataclass
class _Run:
    """The state of a running training loop (read and updated by its steps)."""

    settings: LoraSettings
    rows: _Rows
    accelerator: Any
    say: Progress
    model: Any                         # as prepared: wrapped for gradient sync when there are several processes
    core: Any                          # the peft model itself (validation, checkpoints, saving)
    optimizer: Any
    loader: Any
    sampler: Any
    params: list
    lengths: list[int]                 # tokens of each training example (prefix + prompt + answer)
    pad_id: int
    device: Any
    world: int
    steps_per_epoch: int
    total_steps: int
    every: int
    n_params: int
    n_trainable: int
    tracker: _Tracker
    threads: ThreadChooser
    history: list[dict] = field(default_factory=list)
    step: int = 0
    examples: float = 0
    data_tokens: float = 0
    computed_tokens: float = 0
    losses: list[float] = field(default_factory=list)
    validation_seconds: float = 0.0
    train_seconds: float = 0.0
    loop_started: float = 0.0
    stopped_early: bool = False
    cancelled: bool = False

    @property
    def accuracy_every_check(self) -> bool:
        """Classification with few labels: each check scores every label (cheap) for the live accuracy."""
        return self.rows.spec.task == "classification" and not self.accuracy_at_end

    @property
    def accuracy_at_end(self) -> bool:
        """Classification with many labels: the checks compute the loss, the kept adapter its accuracy."""
        spec = self.rows.spec
        return spec.task == "classification" and len(spec.labels) > LIVE_ACCURACY_MAX_LABELS


def _prepare(settings: LoraSettings, rows: _Rows, accelerator: Any, say: Progress) -> _Run:
    import torch

    device = accelerator.device
    model = rows.loaded.model
    if device.type == "cpu" and settings.max_length <= EAGER_ATTENTION_MAX_LENGTH:
        _set_attention(model, "eager")
    core = add_lora(model, settings).to(device)
    params = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    world = accelerator.num_processes
    lengths = rows.train.lengths()
    loader, sampler = data_loader(lengths, settings.batch_size, world, settings.seed)
    if world > 1:
        model, optimizer, loader = accelerator.prepare(core, optimizer, loader)
    else:
        model, optimizer, loader = core, accelerator.prepare(optimizer), accelerator.prepare(loader)
    steps_per_epoch = max(1, len(sampler) // world)
    total_steps = max(1, round(steps_per_epoch * settings.epochs))
    tokenizer = rows.loaded.tokenizer
    return _Run(settings=settings, rows=rows, accelerator=accelerator, say=say, model=model, core=core,
                optimizer=optimizer, loader=loader, sampler=sampler, params=params, lengths=lengths,
                pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0), device=device,
                world=world, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                every=eval_interval(settings, steps_per_epoch), n_params=sum(p.numel() for p in core.parameters()),
                n_trainable=sum(p.numel() for p in params), tracker=_Tracker(settings.patience),
                threads=ThreadChooser(enabled=device.type == "cpu"))


# -- the loop ---------------------------------------------------------------------------------------------

def _run_steps(run: _Run, stop: Callable[[], bool]) -> None:
    """Train until the planned steps are done, early stopping ends it, or ``stop()`` cancels it."""
    run.loop_started = time.perf_counter()
    val_loss, val_accuracy = _validate(run, 0, None)   # the untrained model: the baseline to beat
    _progress(run, None, val_loss, val_accuracy, 0.0)
    last_report = time.perf_counter()
    run.model.train()
    for epoch in range(math.ceil(run.total_steps / run.steps_per_epoch)):
        run.sampler.set_epoch(epoch)
        for piece in run.loader:
            if run.step >= run.total_steps:
                break
            if _all_agree(stop(), run.accelerator):
                run.cancelled = True
                break
            lr = _train_step(run, piece)
            # validation check: keep the best weights, stop early when it stops improving
            if run.step % run.every == 0 or run.step == run.total_steps:
                if _check(run, lr):
                    break
                last_report = time.perf_counter()
            elif time.perf_counter() - last_report >= 1.0:
                _progress(run, float(np.mean(run.losses[-10:])), None, None, lr)
                last_report = time.perf_counter()
        if run.cancelled or run.stopped_early:
            break
    run.train_seconds = time.perf_counter() - run.loop_started
    run.threads.restore()


def _train_step(run: _Run, piece: list[int]) -> float:
    """One optimizer step on this process's piece of a global batch; returns the learning rate used."""
    import torch

    train, lengths = run.rows.train, run.lengths
    lr = learning_rate_at(run.step, run.total_steps, run.settings)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.threads.before_step(run.step)
    step_started = time.perf_counter()
    step_tokens = len(train.prefix) + sum(lengths[i] - len(train.prefix) for i in piece)
    # rows, data tokens and computed tokens of the whole global batch, over all processes
    rows, data_tokens, computed = _summed([len(piece), sum(lengths[i] for i in piece), step_tokens], run.accelerator)
    loss = answer_loss(run.model, train.prefix, [train.suffixes[i] for i in piece],
                       [train.answers[i] for i in piece], run.pad_id, run.device)
    # gradient sync averages over processes: weight this piece by its share so the result is the mean over
    # the global batch's rows (pieces differ by a row when the batch does not divide evenly)
    run.accelerator.backward(loss * (len(piece) * run.world / rows))
    torch.nn.utils.clip_grad_norm_(run.params, 1.0)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.threads.after_step(time.perf_counter() - step_started, step_tokens)
    run.step += 1
    run.examples += rows
    run.data_tokens += data_tokens
    run.computed_tokens += computed
    run.losses.append(float(loss.detach()))
    return lr


def _check(run: _Run, lr: float) -> bool:
    """A validation check with its progress record; True when early stopping ends the run."""
    train_loss = float(np.mean(run.losses[-run.every:]))
    run.model.eval()
    run.threads.use_choice()
    val_loss, val_accuracy = _validate(run, run.step, train_loss)
    run.model.train()
    _progress(run, train_loss, val_loss, val_accuracy, lr)
    if not run.tracker.should_stop():
        return False
    run.stopped_early = True
    run.say({"event": "warning", "code": "early_stopping", "time": time.time(),
             "message": f"Stopped early at step {run.step}: the validation loss has not improved for "
                        f"{run.settings.patience} checks; the best checkpoint (step {run.tracker.best_step}) "
                        "is kept."})
    return True


def _validate(run: _Run, step: int, train_loss: float | None) -> tuple[float | None, float | None]:
    """Every process checks the same validation rows, so they all agree on the best step and on stopping."""
    if run.rows.val is None:
        return None, None
    checked = time.perf_counter()
    loss, accuracy = validation_metrics(run.core, run.rows.loaded.tokenizer, run.rows.spec, run.rows.val,
                                        run.pad_id, run.device, run.settings.batch_size,
                                        accuracy=run.accuracy_every_check)
    run.validation_seconds += time.perf_counter() - checked
    run.tracker.update(step, train_loss, loss, accuracy, run.core)
    warning = run.tracker.overfitting()
    if warning:
        run.say({**warning, "time": time.time()})
    return loss, accuracy


def _progress(run: _Run, train_loss: float | None, val_loss: float | None, val_accuracy: float | None,
              lr: float) -> None:
    step, total = run.step, run.total_steps
    seconds = time.perf_counter() - run.loop_started if step else 0.0
    record = {"event": "progress", "step": step, "total_steps": total,
              "epoch": round(step / run.steps_per_epoch, 3), "train_loss": _round(train_loss),
              "val_loss": _round(val_loss), "val_accuracy": _round(val_accuracy), "learning_rate": lr,
              "examples_per_second": round(run.examples / seconds, 3) if seconds > 0 else None,
              "percent": round(100 * step / total, 1),
              "eta_seconds": round(seconds / step * (total - step), 1) if step else None, "time": time.time()}
    run.history.append(record)
    run.say(record)


# -- keep the best checkpoint and save it -----------------------------------------------------------------

def _keep_best_and_save(run: _Run, output_dir: str | Path | None) -> tuple[Path | None, float]:
    import torch

    if run.tracker.best_weights:
        with torch.no_grad():
            for name, p in run.core.named_parameters():
                if name in run.tracker.best_weights:
                    p.copy_(run.tracker.best_weights[name])
    adapter_dir, adapter_mb = None, 0.0
    if not run.cancelled and output_dir is not None and run.accelerator.is_main_process:
        adapter_dir = Path(output_dir)
        adapter_dir.mkdir(parents=True, exist_ok=True)
        run.core.save_pretrained(str(adapter_dir), safe_serialization=True)
        adapter_mb = round(sum((adapter_dir / f).stat().st_size for f in ADAPTER_FILES
                               if (adapter_dir / f).is_file()) / 2**20, 3)
    run.accelerator.wait_for_everyone()
    return adapter_dir, adapter_mb


def _accuracy_of_kept_adapter(run: _Run) -> None:
    """With many labels, the validation accuracy of the kept (best) adapter, scored once after training.

    Its checks computed the validation loss only: exact accuracy over 150 labels costs about 0.5 s per
    validation row even for a confident adapter (labels that share first words must be scored to their end),
    and it took 104 of 151 s of a 360-row run. The loss, which picks the best step and stops early, is the
    same at every check either way.
    """
    if not run.accuracy_at_end or run.rows.val is None or run.cancelled:
        return
    checked = time.perf_counter()
    run.core.eval()
    _, accuracy = validation_metrics(run.core, run.rows.loaded.tokenizer, run.rows.spec, run.rows.val, run.pad_id,
                                     run.device, run.settings.batch_size)
    seconds = time.perf_counter() - checked
    run.validation_seconds += seconds
    run.train_seconds += seconds  # part of the run's time, as the checks during the loop are
    run.tracker.best_accuracy = accuracy
    if accuracy is not None:
        run.say({"event": "validation", "step": run.tracker.best_step, "val_accuracy": _round(accuracy),
                 "time": time.time(),
                 "message": f"Validation accuracy of the kept adapter (step {run.tracker.best_step}): "
                            f"{accuracy:.1%}. With {len(run.rows.spec.labels)} labels it is measured once, at the "
                            "end; the validation loss was checked every time."})


# -- validation -------------------------------------------------------------------------------------------

def validation_metrics(model: Any, tokenizer: Any, spec: Any, val: Encoded, pad_id: int, device: Any,
                       batch_size: int, *, accuracy: bool = True) -> tuple[float, float | None]:
    """Validation loss (as in training) and, for classification, accuracy by the harness's label scoring.

    ``accuracy=False`` computes the loss alone (the answer tokens of each row's own answer: the same number
    the label scoring gives for the right label) and returns None for the accuracy.

    With many labels (``evaluate.PRUNE_FROM_LABELS``) the argmax comes from pruned scoring, as the harness
    scores, and each row's right label is scored on its own where pruning skipped it: both numbers are those
    of scoring every label. Even so, with 150 labels a confident adapter's accuracy costs about 0.5 s per row
    (labels that share their first words are scored to the end), which is why the training loop asks for it
    once, on the kept adapter (``_accuracy_of_kept_adapter``).
    """
    import torch

    rows = list(range(len(val)))
    if spec.task == "classification" and accuracy:
        from ..prompting import Renderer

        renderer = Renderer(spec.with_(shots=0, example_ids=[]), tokenizer)
        label_answers = [renderer.answer_ids(label) for label in spec.labels]
        prompts = [val.prefix + s for s in val.suffixes]
        gold = [label_answers.index(a) if a in label_answers else -1 for a in val.answers]
        known = [i for i in rows if gold[i] >= 0]
        scores = _label_scores(_Loaded(model, tokenizer), prompts, label_answers, gold)  # mean log-prob per token
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


def _label_scores(loaded: Any, prompts: list[list[int]], answers: list[list[int]], gold: list[int]) -> np.ndarray:
    """Every row's label scores with its argmax and its right label (``gold``, -1: none) exact; with many labels
    the others may be ``-inf`` (pruned: they could not win)."""
    from ..evaluate import score_labels

    if len(answers) < PRUNE_FROM_LABELS:
        return score_labels(loaded, prompts, answers)
    scores = score_labels(loaded, prompts, answers, prune_bias=np.zeros(len(answers)))
    skipped = [i for i, g in enumerate(gold) if g >= 0 and not np.isfinite(scores[i, g])]
    for label in sorted({gold[i] for i in skipped}):
        mine = [i for i in skipped if gold[i] == label]
        scores[mine, label] = score_labels(loaded, [prompts[i] for i in mine], [answers[label]])[:, 0]
    return scores


@dataclass
class _Loaded:
    """The minimal LoadedModel shape the harness's scoring functions read."""

    model: Any
    tokenizer: Any
