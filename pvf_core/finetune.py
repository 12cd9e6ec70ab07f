"""LoRA fine-tuning: settings, presets, estimates, the training loop and the run folder it leaves.

    LoraSettings, PRESETS, preset_settings(preset, **changes)
    finetune_warnings(splits, settings)                  -> [HealthWarning]   (before training)
    estimate(settings, splits, model_name)               -> Estimate          (time, peak memory, fits?)
    train_lora(settings, splits, model_name, output_dir, on_progress, should_stop) -> TrainResult
    FinetuneRun.load(folder).arm()                       -> the evaluation harness's Arm
    zip_run(folder), merge_run(folder, target)

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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .data import HealthWarning, Splits, health_check
from .errors import DataError, ModelLoadError, PvfError, SettingsError
from .settings import check_ranges, known_fields, setting

Progress = Callable[[dict], None]
TARGET_CHOICES = ("attention", "all-linear")
RUN_FILE = "run.json"
CARD_FILE = "README.md"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
RUN_FORMAT = 1


# -- settings ---------------------------------------------------------------------------------------------

@dataclass
class LoraSettings:
    """How a LoRA adapter is trained on your rows (a small set of extra weights; the model itself is frozen)."""

    learning_rate: float = setting(
        5e-4, "How big each correction step is. Too high: the training loss jumps around or the model starts "
        "answering one label for everything; too low: the loss barely moves and the adapter learns little. "
        "LoRA usually works between 1e-4 and 1e-3.", min=1e-6, max=0.1, label="Learning rate")
    epochs: float = setting(
        2, "How many times the model reads every training row (0.5 = half of them once). Too few: it has not "
        "learned the task yet (validation loss still falling at the end); too many: it memorises the rows "
        "(validation loss rises while training loss falls). Early stopping ends a run that stops improving.",
        min=0.05, max=50)
    rank: int = setting(
        8, "Size of the adapter (LoRA rank r). Larger can learn more complex tasks but trains slower and "
        "overfits small data sooner; 4-16 is plenty for labelling tasks.", min=1, max=256, label="LoRA rank")
    alpha: float = setting(
        16.0, "Scales how strongly the adapter changes the model (LoRA alpha; the change is alpha / rank "
        "times the adapter's output). Usually twice the rank; raising it acts like a higher learning rate.",
        min=0.1, max=1024, label="LoRA alpha", advanced=True)
    dropout: float = setting(
        0.0, "Share of the adapter's inputs randomly hidden during training, so it cannot rely on single "
        "features. Raise it (0.05-0.2) when validation loss rises early; too high and it learns slowly. 0 (peft's "
        "default) is also the fastest.", min=0.0, max=0.5, label="LoRA dropout", advanced=True)
    target_modules: str = setting(
        "attention", "Which weight matrices get an adapter: 'attention' (the model's standard choice, for "
        "SmolLM2 the query and value projections; smallest and fastest), 'all-linear' (every layer: more "
        "capacity, about twice as slow), or a comma-separated list of module names.",
        label="Adapted layers", advanced=True)
    max_length: int = setting(
        256, "Longest training example in tokens (prompt + answer). Longer rows have the end of their text "
        "cut. Too low cuts away what decides the answer; higher costs memory only for rows that long.",
        min=16, max=32768, label="Max length (tokens)", advanced=True)
    batch_size: int = setting(
        8, "Rows per training step. Larger batches give smoother steps and use more memory; smaller ones "
        "more, noisier steps. With very small data use 4.", min=1, max=512, label="Batch size", advanced=True)
    warmup: float = setting(
        0.05, "Share of the steps over which the learning rate rises from 0 to its value, which avoids a "
        "damaging first jump. Then it falls smoothly to a tenth.", min=0.0, max=0.5, advanced=True)
    weight_decay: float = setting(
        0.0, "Pulls the adapter's weights towards zero a little each step, a mild guard against "
        "memorising. 0 is fine for LoRA.", min=0.0, max=1.0, advanced=True)
    eval_every: int = setting(
        0, "Check the validation rows every this many steps (0 = about three times per epoch). More often "
        "gives earlier stopping and a better kept checkpoint, but each check costs time.", min=0, max=100000,
        label="Validate every (steps)", advanced=True)
    patience: int = setting(
        3, "Early stopping: stop after this many validation checks in a row without a better validation "
        "loss (0 = never stop early). The best checkpoint is kept either way.", min=0, max=100, advanced=True)
    validation_rows: int = setting(
        64, "How many validation rows each check reads (the first ones of the validation split). More gives "
        "steadier validation numbers at more time per check.", min=1, max=100000, advanced=True)
    seed: int = setting(0, "Random seed for the adapter's starting weights, row order and dropout. Change it to "
                        "see how much a result depends on luck.", min=0)

    def __post_init__(self) -> None:
        check_ranges(self)
        self.epochs = int(self.epochs) if float(self.epochs).is_integer() else float(self.epochs)
        self.target_modules = str(self.target_modules).strip()
        if not self.target_modules:
            raise SettingsError("Adapted layers must name at least one layer, 'attention' or 'all-linear'.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LoraSettings":
        """Settings from a dict (unknown keys warn and are ignored, as in peft's configs)."""
        return cls(**known_fields(cls, data))

    def peft_targets(self) -> Any:
        """``target_modules`` as peft takes it: None = the model family's default (attention)."""
        if self.target_modules == "attention":
            return None
        if self.target_modules == "all-linear":
            return "all-linear"
        return [name.strip() for name in self.target_modules.split(",") if name.strip()]


@dataclass(frozen=True)
class Preset:
    """A named set of setting changes with a one-line explanation."""

    name: str
    summary: str
    changes: dict


# Presets are a few overrides of the defaults. Arithmetic for 500 SST-2 rows on 2 CPU cores (~10 rows/s):
# quick 450 rows x 1 epoch ≈ 45 s; balanced x 2 ≈ 1.5 min; thorough x 4 on all layers ≈ 6 min.
PRESETS: dict[str, Preset] = {
    "quick": Preset("Quick", "One pass over the data with a small adapter: a first answer in minutes.",
                    {"epochs": 1, "rank": 8, "learning_rate": 1e-3}),
    "balanced": Preset("Balanced", "Two passes with early stopping: the recommended start for a few hundred "
                       "to a few thousand rows.", {"epochs": 2, "rank": 8, "learning_rate": 5e-4}),
    "thorough": Preset("Thorough", "Up to four passes with an adapter on every layer: slowest, for harder "
                       "tasks or when Balanced is still improving at the end.",
                       {"epochs": 4, "rank": 16, "alpha": 32.0, "learning_rate": 3e-4,
                        "target_modules": "all-linear", "patience": 4}),
}
DEFAULT_PRESET = "balanced"


def preset_settings(preset: str = DEFAULT_PRESET, **changes: Any) -> LoraSettings:
    """The preset's settings with ``changes`` on top (None values are ignored)."""
    key = preset.strip().lower()
    if key not in PRESETS:
        raise SettingsError(f"Unknown preset '{preset}'; use one of {', '.join(PRESETS)}.")
    values = {**PRESETS[key].changes, **{k: v for k, v in changes.items() if v is not None}}
    return LoraSettings(**values)


# -- warnings before training -----------------------------------------------------------------------------

MIN_TRAIN_ROWS = 100        # below this, fine-tuning results swing with every row
MIN_TRAIN_PER_LABEL = 20    # below this per label, the adapter sees too few examples of it
MIN_VALIDATION_ROWS = 20    # below this, validation loss is too noisy for early stopping
RELEVANT_HEALTH = {"single_class", "too_few_rows", "too_few_per_class", "class_imbalance", "conflicting_labels",
                   "leakage", "too_many_classes"}


def finetune_warnings(splits: Splits, settings: LoraSettings | None = None,
                      lengths: Sequence[int] | None = None) -> list[HealthWarning]:
    """Plain-language findings that make a fine-tuning run risky, worst first (reuses data.health_check).

    ``lengths`` (tokens per training example) adds a warning about rows longer than ``max_length``.
    """
    settings = settings or LoraSettings()
    found = [w for w in health_check(splits) if w.code in RELEVANT_HEALTH]
    n_train = len(splits.train)
    if n_train < MIN_TRAIN_ROWS:
        found.append(HealthWarning(
            "small_for_finetuning", f"Only {n_train} training rows. Fine-tuning usually needs a few hundred; with "
            "fewer the result changes a lot from run to run, and a good prompt may do as well.", "warning",
            {"train_rows": n_train, "recommended": MIN_TRAIN_ROWS}))
    if splits.task == "classification" and n_train:
        counts = splits.train["label"].value_counts()
        rare = counts[counts < MIN_TRAIN_PER_LABEL]
        if len(rare):
            found.append(HealthWarning(
                "few_rows_per_label", f"{len(rare)} label(s) have fewer than {MIN_TRAIN_PER_LABEL} training rows "
                f"({', '.join(f'{k}: {v}' for k, v in rare.head(5).items())}); the adapter will rarely answer them.",
                "warning", {"labels": {str(k): int(v) for k, v in rare.items()}}))
    if len(splits.validation) < MIN_VALIDATION_ROWS:
        found.append(HealthWarning(
            "small_validation", f"Only {len(splits.validation)} validation rows: the validation loss that early "
            "stopping watches will be noisy.", "info", {"validation_rows": len(splits.validation)}))
    if lengths is not None:
        cut = int(sum(n > settings.max_length for n in lengths))
        if cut:
            found.append(HealthWarning(
                "rows_cut", f"{cut} training rows are longer than the max length of {settings.max_length} tokens; "
                "the end of their text is cut.", "warning", {"rows": cut, "max_length": settings.max_length,
                                                            "longest": int(max(lengths))}))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda w: order[w.level])


def result_warnings(metrics: dict) -> list[HealthWarning]:
    """Plain-language findings about a fine-tuned model's test metrics: no better than guessing, one answer only."""
    found = []
    shares = metrics.get("true_shares") or {}
    if shares and metrics.get("accuracy") is not None:
        common = max(shares, key=shares.get)
        if metrics["accuracy"] <= shares[common]:
            found.append(HealthWarning(
                "no_better_than_majority", f"No better than always answering '{common}', which would get "
                f"{shares[common]:.0%} of these rows right: the model has not learned the task (yet). More training "
                "rows, more passes or a higher learning rate may help; or a prompt does the job.", "warning",
                {"accuracy": metrics["accuracy"], "majority_label": common, "majority_share": shares[common]}))
    gone = metrics.get("collapse") or {}
    if gone.get("collapsed"):
        found.append(HealthWarning(
            "collapsed", f"The model answers '{gone['label']}' for {gone['share']:.0%} of the rows (the right answer "
            f"for {gone['true_share']:.0%}): it has learned to say one thing. More rows, more passes or a higher "
            "learning rate may help.", "warning", dict(gone)))
    return found


def cap_rows(splits: Splits, train_rows: int | None = None, test_rows: int | None = None) -> Splits:
    """The first ``train_rows`` training and ``test_rows`` test rows (the splits are shuffled): a quicker run.

    Validation rows stay as they are (``LoraSettings.validation_rows`` limits how many each check reads).
    """
    return dataclasses.replace(
        splits, train=splits.train.head(int(train_rows)) if train_rows else splits.train,
        test=splits.test.head(int(test_rows)) if test_rows else splits.test)


# -- turning rows into token ids --------------------------------------------------------------------------

@dataclass
class Encoded:
    """Rows as token ids: a prefix every row shares, then each row's own prompt tokens and answer tokens."""

    prefix: list[int]
    suffixes: list[list[int]]
    answers: list[list[int]]

    def __len__(self) -> int:
        return len(self.suffixes)

    def lengths(self) -> list[int]:
        """Tokens of each whole example (prefix + prompt + answer)."""
        return [len(self.prefix) + len(s) + len(a) for s, a in zip(self.suffixes, self.answers)]


TRAINING_LISTED_LABELS = 20  # more labels than this are not listed in the fine-tuned arm's prompt


def default_prompt(splits: Splits, instruction: str = "") -> Any:
    """The zero-shot prompt a fine-tuned arm is trained and scored with.

    With many labels the prompt does not list them: the adapter learns them from the answers, and a list of
    50 labels (~270 tokens) would already overflow the default max length; per row, training then costs
    the same whatever the number of labels.
    """
    from .prompting import PromptSpec

    spec = PromptSpec(task=splits.task, instruction=instruction, labels=list(splits.labels))
    if len(spec.labels) > TRAINING_LISTED_LABELS:
        spec = spec.with_(output_format="Answer with exactly one label, nothing else.")
    return spec


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving at least one token of each prompt to run per row."""
    if not prompts:
        return 0
    limit = max(min(len(p) for p in prompts) - 1, 0)
    first = prompts[0]
    for prompt in prompts[1:]:
        n = 0
        while n < limit and prompt[n] == first[n]:
            n += 1
        limit = n
    return limit


def encode(frame: pd.DataFrame, spec: Any, tokenizer: Any, max_length: int) -> tuple[Encoded, list[int]]:
    """Token ids of each row exactly as the harness renders it; also each row's uncut length.

    The row's text is cut so prompt + answer fit ``max_length``; an answer longer than half of it is cut too.
    """
    from .prompting import Renderer

    renderer = Renderer(spec.with_(shots=0, example_ids=[]), tokenizer)
    frame_tokens = len(renderer.prompt_ids(""))
    prompts, answers, full = [], [], []
    for text, label in zip(frame["text"].astype(str), frame["label"].astype(str)):
        answer = renderer.answer_ids(label)[:max_length // 2]
        if frame_tokens + len(answer) >= max_length:
            raise SettingsError(f"Max length {max_length} is too small: the prompt around each text and the "
                                f"answer alone take {frame_tokens + len(answer)} tokens.",
                                f"Use a max length of at least {frame_tokens + len(answer) + 32}.")
        prompt = renderer.prompt_ids(text)
        full.append(len(prompt) + len(answer))
        prompts.append(renderer.prompt_ids(text, max_tokens=max_length - len(answer)))
        answers.append(answer)
    shared = common_prefix_length(prompts)
    prefix = prompts[0][:shared] if prompts else []
    return Encoded(prefix=prefix, suffixes=[p[shared:] for p in prompts], answers=answers), full


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffle, sort by length within chunks of 50 batches, cut into batches, shuffle the batches.

    Rows in a batch have similar lengths, so little padding is computed, yet every epoch sees a new order.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def frame_hash(*frames: pd.DataFrame) -> str:
    """A short content hash of the rows (text, label) the adapter learned from."""
    digest = hashlib.sha256()
    for frame in frames:
        for text, label in zip(frame["text"].astype(str), frame["label"].astype(str)):
            digest.update(f"{text}\t{label}\n".encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


# -- the model: a private copy of the base model with LoRA adapters ---------------------------------------

def train_dtype() -> Any:
    """bfloat16 base weights where the CPU/GPU computes it natively, else float32 (``PVF_DTYPE`` overrides)."""
    from .models import best_dtype

    return best_dtype()


# On CPU, plain ("eager") attention trained 1.1-1.4x faster than PyTorch's fused kernel for rows of 30-130
# tokens; it holds the attention weights for backward, so longer rows keep the fused kernel.
EAGER_ATTENTION_MAX_LENGTH = 512


def _set_attention(model: Any, implementation: str) -> None:
    try:
        model.set_attn_implementation(implementation)
    except (AttributeError, ValueError, ImportError):
        pass  # a model that offers only its own attention keeps it


def add_lora(model: Any, settings: LoraSettings) -> Any:
    """Wrap ``model`` with fresh LoRA adapters (float32, whatever the base weights' dtype)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.peft_targets(), task_type="CAUSAL_LM", bias="none")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            return get_peft_model(model, config, autocast_adapter_dtype=True)
    except ValueError as error:
        raise SettingsError(f"LoRA cannot be put on this model's layers '{settings.target_modules}' "
                            f"({str(error).splitlines()[0]}).",
                            "Choose 'attention' or 'all-linear' for Adapted layers.") from error


# A batch whose prefix + rows fit this many tokens runs as one packed sequence: one pass instead of a prefix
# pass plus a padded pass. On 500 SST-2 rows that trained at 8.9 examples/s instead of 7.9 (bench_finetune,
# 2 runs each). Its attention is dense over the whole sequence, so its cost grows with the square of the
# length, and the run's peak memory grew by 400 MB at this cap (690 MB at 512): longer batches stay padded.
PACKED_MAX_TOKENS = 384


def answer_loss(model: Any, prefix: Sequence[int], suffixes: list[list[int]], answers: list[list[int]],
                pad_id: int, device: Any = "cpu", packed_max_tokens: int | None = None) -> Any:
    """Mean over rows of the mean negative log-likelihood per answer token: what the harness scores.

    Each row is its prompt tail and its answer without the last token, after the shared prefix; logits are
    computed only at the positions that predict an answer token. Short batches are packed into one
    sequence (``_packed_logits``), longer ones run the prefix once and the rows right-padded after it
    (``_padded_logits``); both compute the same loss. ``packed_max_tokens`` defaults to ``PACKED_MAX_TOKENS``.
    """
    import torch
    import torch.nn.functional as F

    inputs = [list(s) + list(a[:-1]) for s, a in zip(suffixes, answers)]
    limit = PACKED_MAX_TOKENS if packed_max_tokens is None else packed_max_tokens
    if len(prefix) + sum(len(x) for x in inputs) <= limit:
        logits = _packed_logits(model, list(prefix), suffixes, answers, inputs, device)
    else:
        logits = _padded_logits(model, list(prefix), suffixes, answers, inputs, pad_id, device)
    targets = [t for a in answers for t in a]
    owner = torch.tensor([r for r, a in enumerate(answers) for _ in a], device=device)
    nll = F.cross_entropy(logits.float().reshape(len(targets), -1), torch.tensor(targets, device=device),
                          reduction="none")
    per_row = torch.zeros(len(answers), device=device).index_add_(0, owner, nll)
    per_row = per_row / torch.bincount(owner, minlength=len(answers)).clamp(min=1)
    return per_row.mean()


def _packed_logits(model: Any, prefix: list[int], suffixes: list[list[int]], answers: list[list[int]],
                   inputs: list[list[int]], device: Any) -> Any:
    """One sequence: the prefix, then every row; a row sees the prefix and its own earlier tokens only.

    Positions restart after the prefix for every row, so each row is computed exactly as if it ran alone.
    """
    import torch

    from .models import attention_mask_for

    start = len(prefix)
    total = start + sum(len(x) for x in inputs)
    positions = torch.arange(total)
    allowed = torch.zeros((total, total), dtype=torch.bool)
    allowed[:start, :start] = True
    keep = torch.zeros(total, dtype=torch.bool)
    offset = start
    for x, s, a in zip(inputs, suffixes, answers):
        rows = slice(offset, offset + len(x))
        positions[rows] = start + torch.arange(len(x))
        allowed[rows, :start] = True
        allowed[rows, rows] = True
        keep[offset + len(s) - 1:offset + len(s) - 1 + len(a)] = True
        offset += len(x)
    allowed &= torch.ones((total, total), dtype=torch.bool).tril()
    ids = torch.tensor([prefix + [t for x in inputs for t in x]])
    out = model(input_ids=ids.to(device), attention_mask=attention_mask_for(model, allowed[None, None]).to(device),
                position_ids=positions[None].to(device), logits_to_keep=keep[None].to(device))
    return out.logits


def _padded_logits(model: Any, prefix: list[int], suffixes: list[list[int]], answers: list[list[int]],
                   inputs: list[list[int]], pad_id: int, device: Any) -> Any:
    """The shared prefix once (with gradients: its keys/values depend on the adapters too), its key/value
    cache expanded over the batch, then the rows right-padded after it."""
    import torch
    from transformers import DynamicCache

    rows, start = len(inputs), len(prefix)
    cache = None
    if start:
        out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
        kv = [(layer[0].expand(rows, -1, -1, -1), layer[1].expand(rows, -1, -1, -1)) for layer in out.cache]
        cache = DynamicCache(ddp_cache_data=kv, config=model.config)
    width = max(len(x) for x in inputs)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    keep = torch.zeros((rows, width), dtype=torch.bool)
    for r, (x, s, a) in enumerate(zip(inputs, suffixes, answers)):
        ids[r, :len(x)] = torch.tensor(x)
        keep[r, len(s) - 1:len(s) - 1 + len(a)] = True   # positions whose next token is an answer token
    lengths = torch.tensor([len(x) for x in inputs])
    mask = torch.ones((rows, start + width), dtype=torch.long)
    mask[:, start:] = torch.arange(width)[None, :] < lengths[:, None]
    positions = (start + torch.arange(width))[None, :].expand(rows, -1)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                cache=cache, use_cache=cache is not None, logits_to_keep=keep.to(device))
    return out.logits


# -- the schedule -----------------------------------------------------------------------------------------

def learning_rate_at(step: int, total_steps: int, settings: LoraSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth of the learning rate (nanoGPT's get_lr)."""
    warmup = int(settings.warmup * total_steps)
    peak, floor = settings.learning_rate, settings.learning_rate / 10
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return floor + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (peak - floor)


def eval_interval(settings: LoraSettings, steps_per_epoch: int) -> int:
    return settings.eval_every or max(1, math.ceil(steps_per_epoch / 3))


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


class _Tracker:
    """Validation history, the best weights so far, early stopping and the overfitting warning."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_loss = math.inf
        self.best_accuracy: float | None = None
        self.best_step = 0
        self.best_weights: dict[str, Any] = {}
        self.checks: list[tuple[int, float, float]] = []   # (step, train loss, validation loss)
        self.warned = False

    def update(self, step: int, train_loss: float | None, val_loss: float, val_accuracy: float | None,
               model: Any) -> bool:
        """Record a check; keep the weights if best. True when this is a new best."""
        self.checks.append((step, train_loss if train_loss is not None else math.nan, val_loss))
        if val_loss < self.best_loss - 1e-4:
            self.best_loss, self.best_accuracy, self.best_step = val_loss, val_accuracy, step
            self.best_weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            return True
        return False

    def should_stop(self) -> bool:
        if not self.patience:
            return False
        since_best = sum(1 for step, _, _ in self.checks if step > self.best_step)
        return since_best >= self.patience

    def overfitting(self) -> dict | None:
        """A warning (once) when validation loss rose for two checks while training loss fell."""
        if self.warned or len(self.checks) < 3:
            return None
        (s0, t0, v0), (_, t1, v1), (s2, t2, v2) = self.checks[-3:]
        if v2 > v1 > v0 and t2 < t1 < t0 and v2 > self.best_loss:
            self.warned = True
            return {"event": "warning", "code": "overfitting",
                    "message": f"The model is starting to memorise the training rows: from step {s0} to {s2} the "
                               f"validation loss rose ({v0:.3f} → {v2:.3f}) while the training loss kept falling "
                               f"({t0:.3f} → {t2:.3f}). The best checkpoint (step {self.best_step}) is kept; "
                               "fewer epochs, a lower learning rate or more rows would help."}
        return None


class ThreadChooser:
    """Picks torch's CPU thread count by timing real training steps, and checks again now and then.

    On a machine where other programs (or the app scoring a prompt) keep the cores busy, every parallel
    operation waits for its descheduled threads: one thread was then 10x faster than two here. On an idle
    machine all cores win. ``PVF_THREADS`` fixes the count instead.
    """

    PROBE_EVERY = 40  # steps between re-checks of the other choice

    def __init__(self, enabled: bool) -> None:
        import torch

        self.torch = torch
        fixed = os.environ.get("PVF_THREADS", "").strip()
        if fixed.isdigit() and int(fixed) > 0:
            torch.set_num_threads(int(fixed))
            enabled = False
        self.most = torch.get_num_threads()
        self.enabled = enabled and self.most > 1
        self.choice = self.most
        self.cost: dict[int, list[float]] = {self.most: [], 1: []}   # seconds per token, recent steps
        self.trying: int | None = None

    def before_step(self, step: int) -> None:
        """Set the thread count for this step: probe both in the first steps, then re-check sometimes."""
        if not self.enabled:
            return
        if step in (1, 2):
            self.trying = 1                      # steps 1-2 run on one thread, 3-4 on all (step 0 warms up)
        elif step in (3, 4):
            self.trying = self.most
        elif step > 4 and step % self.PROBE_EVERY == 0:
            self.trying = 1 if self.choice == self.most else self.most
        else:
            self.trying = None
        self.torch.set_num_threads(self.trying or self.choice)

    def after_step(self, seconds: float, tokens: int) -> None:
        if not self.enabled or self.trying is None:
            if self.enabled:
                self.cost[self.choice] = (self.cost[self.choice] + [seconds / max(tokens, 1)])[-5:]
            return
        self.cost[self.trying] = (self.cost[self.trying] + [seconds / max(tokens, 1)])[-5:]
        if all(self.cost.values()):
            best = min(self.cost, key=lambda n: float(np.median(self.cost[n])))
            self.choice = best

    def use_choice(self) -> None:
        self.torch.set_num_threads(self.choice)

    def restore(self) -> None:
        self.torch.set_num_threads(self.most)


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

    from .models import load_model

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
        from .evaluate import score_labels
        from .prompting import Renderer

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


# -- the run folder: adapter + run.json + model card ------------------------------------------------------

@dataclass
class FinetuneRun:
    """What a fine-tuning run leaves in its folder, next to the peft adapter files (``run.json``)."""

    model: str                       # the base model as given: 'bundled', a folder or a hub id
    settings: LoraSettings
    prompt: dict                     # the PromptSpec the adapter was trained and is scored with
    task: str
    labels: list[str]
    data: dict                       # hash and sizes of the rows it learned from
    training: dict                   # steps, best step, validation numbers, speed, memory
    metrics: dict = field(default_factory=dict)      # test metrics, once evaluated
    evaluation: dict = field(default_factory=dict)   # n_test, ms_per_example, ... of that evaluation
    versions: dict = field(default_factory=dict)
    created: str = ""
    seconds: float = 0.0
    format: int = RUN_FORMAT
    folder: Path | None = field(default=None, compare=False)

    @classmethod
    def from_result(cls, result: TrainResult, seconds: float = 0.0) -> "FinetuneRun":
        data = {"hash": result.data_hash, "train_rows": result.train_rows,
                "validation_rows_checked": result.validation_rows}
        return cls(model=result.model, settings=result.settings, prompt=result.prompt.to_dict(), task=result.task,
                   labels=list(result.labels), data=data, training=result.training_summary(),
                   versions=_versions(), created=time.strftime("%Y-%m-%d %H:%M:%S"), seconds=round(seconds, 3),
                   folder=result.adapter_dir)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "folder"}
        out["settings"] = self.settings.to_dict()
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``run.json`` and the model card ``README.md`` into ``folder`` (next to the adapter)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_FILE).write_text(json.dumps(self.to_dict(), indent=2, default=str), encoding="utf-8")
        (folder / CARD_FILE).write_text(model_card(self), encoding="utf-8")
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "FinetuneRun":
        """Read a run folder written by ``save`` (unknown keys warn and are ignored)."""
        folder = Path(folder)
        path = folder / RUN_FILE
        if not path.is_file():
            raise ModelLoadError(f"{folder} is not a fine-tuning run folder (it has no {RUN_FILE}).",
                                 "Pick the folder a fine-tuning run wrote.")
        values = known_fields(cls, json.loads(path.read_text(encoding="utf-8")), skip=("folder",))
        values["settings"] = LoraSettings.from_dict(values.get("settings", {}))
        return cls(**values, folder=folder)

    def prompt_spec(self) -> Any:
        from .prompting import PromptSpec

        return PromptSpec.from_dict(self.prompt)

    def arm(self, name: str | None = None) -> Any:
        """The evaluation harness's Arm for this adapter: same model, same prompt it was trained on."""
        from .evaluate import Arm

        return Arm(name=name or f"LoRA r={self.settings.rank}", prompt=self.prompt_spec(), model=self.model,
                   adapter=str(self.folder))

    def with_evaluation(self, result: Any) -> "FinetuneRun":
        """Record the harness's EvalResult on the test rows, and save again."""
        self.metrics = {k: v for k, v in result.metrics.items() if k in ("accuracy", "macro_f1", "chrf",
                                                                          "exact_match", "raw")}
        self.evaluation = {"n_test": result.n_test, "ms_per_example": round(result.ms_per_example, 3),
                           "calibration": result.calibration}
        if self.folder is not None:
            self.save(self.folder)
        return self


def _versions() -> dict:
    import importlib.metadata as md

    found = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "peft", "accelerate"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return found


def model_card(run: FinetuneRun) -> str:
    """The adapter's README: base model, data, settings, metrics, intended use and limits."""
    s, t = run.settings, run.training
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in run.metrics.items() if isinstance(v, (int, float))) or \
        "not evaluated yet"
    val = f"{t.get('best_val_loss')}" + (f", accuracy {t['best_val_accuracy']}" if t.get("best_val_accuracy")
                                         is not None else "")
    labels = ", ".join(run.labels) if run.labels else "(free text)"
    return f"""---
library_name: peft
base_model: {run.model}
tags: [lora, pvf-studio]
---
# LoRA adapter for {run.task} ({labels})

Trained by PvF Studio on {run.created}. Load it with the same base model and the same prompt:

```python
from pvf_core.finetune import FinetuneRun
from pvf_core.evaluate import evaluate
arm = FinetuneRun.load("{run.folder or '.'}").arm()
result = evaluate(arm, test_frame, task="{run.task}")
```

## Base model
`{run.model}` ({t.get('dtype', '')} weights while training, {t.get('n_params', 0):,} parameters; the adapter has
{t.get('n_trainable', 0):,} trainable parameters, {t.get('adapter_mb', 0)} MB).

## Data
{run.data.get("train_rows")} training rows (hash of the training and validation rows: `{run.data.get("hash")}`); validation on
{run.data.get('validation_rows_checked')} held-out rows. Prompt: zero-shot, instruction
"{run.prompt.get('instruction') or '(generic)'}"; the adapter learned to answer in this exact format.

## Settings
{_settings_table(s)}

## Results
- Test metrics: {metrics} ({run.evaluation.get('n_test', '?')} rows).
- Best validation loss {val} at step {t.get('best_step')} of {t.get('steps')}{' (stopped early)' if
    t.get('stopped_early') else ''}.
- Training: {t.get('train_seconds')} s, {t.get('examples_per_second')} examples/s, peak memory
  {t.get('peak_rss_mb')} MB.

## Intended use and limits
For the task and kind of text it was trained on, with the prompt recorded in `run.json`. It has seen only
{run.data.get('train_rows')} rows: expect it to be wrong on texts unlike them, on labels that were rare in them,
and on any other task. Check its predictions on new data before relying on them. It inherits the base
model's biases and knows nothing the base model did not.

Versions: {', '.join(f'{k} {v}' for k, v in run.versions.items())}.
"""


def _settings_table(settings: LoraSettings) -> str:
    rows = ["| setting | value |", "|---|---|"]
    rows += [f"| {k} | {v} |" for k, v in settings.to_dict().items()]
    return "\n".join(rows)


def zip_run(folder: str | Path, target: str | Path | None = None) -> Path:
    """A zip of the adapter, ``run.json`` and the model card (for download)."""
    folder = Path(folder)
    target = Path(target) if target else folder / "adapter.zip"
    names = [n for n in (*ADAPTER_FILES, RUN_FILE, CARD_FILE) if (folder / n).is_file()]
    if "adapter_model.safetensors" not in names:
        raise ModelLoadError(f"{folder} holds no adapter to zip.", "Pick a finished fine-tuning run.")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(folder / name, arcname=name)
    return target


def merge_run(folder: str | Path, target: str | Path | None = None) -> Path:
    """Fold the adapter into a float32 copy of its base model and save that as a standalone model folder."""
    import torch
    from peft import PeftModel

    from .models import check_adapter_folder, load_model

    check_adapter_folder(folder)
    run = FinetuneRun.load(folder)
    target = Path(target) if target else Path(folder) / "merged"
    base = load_model(run.model, dtype=torch.float32, fresh=True)
    merged = PeftModel.from_pretrained(base.model, str(folder)).merge_and_unload()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    merged.save_pretrained(partial, safe_serialization=True)
    base.tokenizer.save_pretrained(partial)
    (partial / "pvf_run.json").write_text(json.dumps(run.to_dict(), indent=2, default=str), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


# -- estimates before training ----------------------------------------------------------------------------

@dataclass
class Estimate:
    """Time and peak memory of a run before it starts, and whether it fits this machine."""

    train_rows: int
    validation_rows: int
    test_rows: int
    steps: int
    checks: int
    tokens_per_example: float
    computed_tokens: int
    load_seconds: float                # loading the model for training
    train_seconds: float               # the training loop with its validation checks
    eval_seconds: float                # scoring the test rows (with a second model load)
    total_seconds: float
    peak_mb: float                     # peak resident memory of the job process
    available_mb: float                # memory free now
    fits: bool
    calibrated: bool                   # measured on this machine, or a rough rule
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ROUGH_FLOPS = 60e9  # effective training FLOP/s assumed before a calibration ran (2 busy CPU cores)
# The calibration process holds less than a real run (the data, the validation scorer's batches, the saved
# checkpoint), and a real run's heap grows over hundreds of steps of varied shapes: glibc keeps what was
# freed (sampled RSS climbs steadily through an epoch; forcing large blocks back to the OS halved the speed).
# SST-2 runs peaked at 1.25-1.39x the calibration's peak with padded batches (1732-1930 MB against
# 1390-1410) and at 1.59-1.67x with packed ones (2253-2367 MB against 1414).
CALIBRATION_MEMORY_MARGIN = 1.7
# A calibration measured while the machine was busy overstates every later estimate (by 2.1x once here), so
# a stored one is trusted for a few hours only.
CALIBRATION_MAX_AGE_S = 6 * 3600


def estimate(settings: LoraSettings, splits: Splits, model_name: str = "bundled", *, prompt: Any = None,
             calibrate: bool = True, test_rows: int | None = None) -> Estimate:
    """Time and peak memory of ``train_lora`` + the test evaluation, from token counts and a calibration.

    The calibration runs a few training steps of this run's batch shapes in a separate process on this
    machine (≈10-20 s, cached per shape in the workspace); ``calibrate=False`` uses a cached one or a rough
    rule. ``fits`` is false when the peak would exceed the memory available now.
    """
    from .models import load_tokenizer

    tokenizer = load_tokenizer(model_name)
    spec = prompt if prompt is not None else default_prompt(splits)
    train, _ = encode(splits.train, spec, tokenizer, settings.max_length)
    test = splits.test.head(test_rows) if test_rows else splits.test
    if len(train) == 0:
        raise DataError("There are no training rows to fine-tune on.")
    plan = _plan(train, settings)
    cached = _calibration(model_name, settings, plan, run=calibrate)
    n_val = min(len(splits.validation), settings.validation_rows)
    checks = plan["steps"] // eval_interval(settings, plan["steps_per_epoch"]) + 1
    if cached:
        per_step = [cached["step_seconds"] + cached["token_seconds"] * tokens for tokens in plan["batch_tokens"]]
        steps_seconds = sum(per_step) * settings.epochs
        forward = cached["forward_token_seconds"]
        load_seconds, peak_mb = cached["load_seconds"], cached["peak_mb"] * CALIBRATION_MEMORY_MARGIN
    else:
        flops = 6 * 135e6
        steps_seconds = plan["computed_tokens"] * flops / ROUGH_FLOPS
        forward = flops / 3 / ROUGH_FLOPS
        load_seconds, peak_mb = 5.0, 2500.0
    mean_suffix = float(np.mean([len(s) + len(a) for s, a in zip(train.suffixes, train.answers)]))
    # validation checks run inside the training loop (and count in its time, as in TrainResult.train_seconds);
    # scoring the test rows loads the base model again and reads each row once per label or so
    train_seconds = steps_seconds + checks * n_val * mean_suffix * forward
    eval_seconds = len(test) * max(1, len(spec.labels) // 2) * mean_suffix * forward + load_seconds
    available = _available_mb()
    fits = peak_mb < 0.9 * available
    total = load_seconds + train_seconds + eval_seconds
    messages = [f"About {_duration(total)} in all: {_duration(train_seconds)} of training ({plan['steps']} steps and "
                f"{checks} validation checks), {_duration(eval_seconds)} to score the test rows.",
                f"Peak memory about {peak_mb / 1024:.1f} GB of {available / 1024:.1f} GB available now."]
    if not fits:
        messages.append(f"This run would not fit: it needs about {peak_mb / 1024:.1f} GB but only "
                        f"{available / 1024:.1f} GB are free. Lower the batch size or the max length, or close "
                        "other programs.")
    if not cached:
        messages.append("A rough guess: no calibration has run on this machine yet.")
    return Estimate(train_rows=len(train), validation_rows=n_val, test_rows=len(test), steps=plan["steps"],
                    checks=checks, tokens_per_example=round(float(np.mean(train.lengths())), 1),
                    computed_tokens=plan["computed_tokens"], load_seconds=round(load_seconds, 1),
                    train_seconds=round(train_seconds, 1), eval_seconds=round(eval_seconds, 1),
                    total_seconds=round(total, 1), peak_mb=round(peak_mb, 1), available_mb=round(available, 1),
                    fits=fits, calibrated=bool(cached), messages=messages)


def _plan(train: Encoded, settings: LoraSettings) -> dict:
    """Batch shapes of one epoch: computed tokens per batch, the widest and the median batch."""
    widths = [len(s) + len(a) - 1 for s, a in zip(train.suffixes, train.answers)]
    batches = length_grouped_batches(widths, settings.batch_size, settings.seed)
    shapes = [(len(b), max(widths[i] for i in b)) for b in batches]
    batch_tokens = [rows * width + len(train.prefix) for rows, width in shapes]
    ordered = sorted(shapes, key=lambda s: s[0] * s[1])
    packed = [s for s in ordered if s[0] * s[1] + len(train.prefix) <= PACKED_MAX_TOKENS]
    return {"prefix": len(train.prefix), "answer": max(len(a) for a in train.answers),
            "median": ordered[len(ordered) // 2], "widest": ordered[-1],
            "widest_packed": packed[-1] if packed else None, "batch_tokens": batch_tokens,
            "steps_per_epoch": len(batches), "steps": max(1, round(len(batches) * settings.epochs)),
            "computed_tokens": round(sum(batch_tokens) * settings.epochs)}


def _calibration(model_name: str, settings: LoraSettings, plan: dict, run: bool) -> dict | None:
    """Measured step time and peak memory for these shapes: from the workspace cache, or measured now."""
    from .store import workspace_dir

    key = {"model": str(model_name), "dtype": str(train_dtype()), "rank": settings.rank,
           "eager": settings.max_length <= EAGER_ATTENTION_MAX_LENGTH and not _cuda_available(),
           "targets": settings.target_modules, "prefix": plan["prefix"], "answer": plan["answer"],
           "median": list(plan["median"]), "widest": list(plan["widest"]),
           "widest_packed": list(plan["widest_packed"] or []), "threads": os.cpu_count(),
           "packed_max_tokens": PACKED_MAX_TOKENS,
           "python": sys.executable}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = workspace_dir("calibration") / f"{name}.json"
    if path.is_file() and time.time() - path.stat().st_mtime < CALIBRATION_MAX_AGE_S:
        return json.loads(path.read_text(encoding="utf-8"))
    if not run:
        return None
    command = [sys.executable, "-m", "pvf_core.finetune", "calibrate", json.dumps(key)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise PvfError("The calibration run failed, so no estimate could be made "
                       f"({(done.stderr.strip().splitlines() or ['no message'])[-1]}).")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    path.write_text(json.dumps(measured), encoding="utf-8")
    return measured


def _calibrate_here(key: dict) -> dict:
    """Run in a fresh process: load the model, time training steps of two shapes, measure the peak."""
    import torch

    from . import evaluate  # noqa: F401 - a real run holds the harness (and what it imports) too
    from .models import load_model

    _accelerator()
    started = time.perf_counter()
    loaded = load_model(key["model"], dtype=train_dtype(), fresh=True)
    if key.get("eager"):
        _set_attention(loaded.model, "eager")
    settings = LoraSettings(rank=key["rank"], target_modules=key["targets"], dropout=0.0)
    model = add_lora(loaded.model, settings)
    load_seconds = time.perf_counter() - started
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    vocab = min(int(loaded.tokenizer.vocab_size), int(model.config.vocab_size))
    generator = torch.Generator().manual_seed(0)

    def shape(rows: int, width: int) -> tuple[list[int], list[list[int]], list[list[int]]]:
        def ids(n: int) -> list[int]:
            return torch.randint(vocab // 10, vocab - 1, (n,), generator=generator).tolist()
        answer = max(1, min(key["answer"], width))
        return ids(key["prefix"]), [ids(max(1, width + 1 - answer)) for _ in range(rows)], \
            [ids(answer) for _ in range(rows)]

    def train_step(batch: tuple) -> float:
        t = time.perf_counter()
        answer_loss(model, *batch, pad_id=0).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    model.train()
    median, widest = shape(*key["median"]), shape(*key["widest"])
    train_step(median)                                   # warm-up
    chooser = ThreadChooser(enabled=True)                # as in training: the faster of 1 and all threads
    t_median = {}
    for threads in sorted({1, chooser.most}) if chooser.enabled else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        t_median[threads] = float(np.mean([train_step(median) for _ in range(2)]))
    best = min(t_median, key=t_median.get)
    torch.set_num_threads(best)
    t_median = t_median[best]
    t_widest = train_step(widest)
    if key.get("widest_packed"):
        train_step(shape(*key["widest_packed"]))         # the longest dense attention a run will hold
    with torch.no_grad():
        t = time.perf_counter()
        answer_loss(model, *median, pad_id=0)
        t_forward = time.perf_counter() - t
    tokens = [key["median"][0] * key["median"][1] + key["prefix"], key["widest"][0] * key["widest"][1] + key["prefix"]]
    token_seconds = (t_widest - t_median) / (tokens[1] - tokens[0]) if tokens[1] > tokens[0] else t_median / tokens[0]
    token_seconds = max(token_seconds, t_median / tokens[0] * 0.5)
    return {"step_seconds": max(0.0, t_median - token_seconds * tokens[0]), "token_seconds": token_seconds,
            "forward_token_seconds": t_forward / tokens[0], "load_seconds": load_seconds,
            "peak_mb": _peak_rss_mb(), "threads": best, "measured": time.time()}


def _available_mb() -> float:
    """Memory free for a new process now (GPU memory on a CUDA machine)."""
    if _cuda_available():
        import torch

        return torch.cuda.mem_get_info()[0] / 2**20
    try:
        import psutil

        return psutil.virtual_memory().available / 2**20
    except ImportError:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) / 2**20


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


if __name__ == "__main__":  # python -m pvf_core.finetune calibrate '{...}': used by estimate()
    if len(sys.argv) == 3 and sys.argv[1] == "calibrate":
        print(json.dumps(_calibrate_here(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: python -m pvf_core.finetune calibrate JSON")
