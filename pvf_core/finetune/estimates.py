"""Time and peak memory of a run before it starts: token counts times a calibration measured on this machine."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import Splits
from ..errors import DataError, PvfError
from .lora import EAGER_ATTENTION_MAX_LENGTH, _set_attention, add_lora, train_dtype
from .loss import PACKED_MAX_TOKENS, answer_loss
from .processes import _accelerator, _cuda_available, _peak_rss_mb
from .schedule import ThreadChooser, eval_interval
from .settings import LoraSettings
from .tokens import Encoded, default_prompt, encode, length_grouped_batches


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
    device: str = "cpu"                # where it would train
    model: dict = field(default_factory=dict)   # the model's size, read from its config (models.ModelFacts)
    calibration_seconds: float = 0.0   # how long measuring (the calibration) would take; 0 once it has run

    @property
    def rough(self) -> bool:
        """True before a calibration: the numbers come from the model's size and rules of thumb."""
        return not self.calibrated

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "rough": self.rough}

    def summary(self) -> dict:
        """The contract's ``estimate`` object: ``{seconds, peak_mb, rough}``."""
        return {"seconds": self.total_seconds, "peak_mb": self.peak_mb, "rough": self.rough}


ROUGH_FLOPS = 60e9  # effective training FLOP/s assumed before a calibration ran (2 busy CPU cores)
ROUGH_GPU_FLOPS = 20e12  # the same on a GPU: a fraction of its peak, as small LoRA batches use it
# Rough memory, before a calibration (CPU: resident memory; GPU: GPU memory), from the model's config:
#   load:  base + the weights file (memory-mapped while read) + the weights in the training dtype
#   train: base + weights + activations of the widest batch (tokens x layers x (10 hidden + 4 intermediate)
#          values, times ACTIVATION_FACTOR), plus the dense attention of the widest packed batch
# and the larger of the two, times the same heap margin as a calibration (CALIBRATION_MEMORY_MARGIN).
# Measured here for the bundled model (bf16, 2 threads): imports 501 MB; loaded 1322 MB (fp32 file 513 MB +
# bf16 weights 257 MB); a step of 8 rows x 100 tokens + 31 peaked 914 MB above base + weights, 1.54x the rule.
ROUGH_BASE_MB = {"cpu": 500.0, "cuda": 600.0}   # Python, torch, transformers imported / the CUDA context
ACTIVATION_FACTOR = 1.5
ROUGH_LOAD_MB_PER_S = 100.0   # reading the weights file while loading (plus ROUGH_LOAD_FIXED_S); the bundled
ROUGH_LOAD_FIXED_S = 2.0      # model's calibration measured 10 s to load and wrap it on the busy 2-core machine
# The calibration's own duration: a new Python process importing torch, transformers, peft and accelerate
# (18 s measured on the busy 2-core machine), the load, then its steps. Its warm-up and the four steps that
# try one thread and all threads count CALIBRATION_PROBE_FACTOR times a step at the rough rate: on a busy
# machine one of the two thread counts is several times slower. Measured for 500 SST-2 rows (balanced): the
# calibration took 156 s; this rule says 116 s (the fixed "about 20 s" the wizard showed was 8x short).
# Once a calibration ran here, its measured start-up (imports: its wall time less its load and steps) and load
# replace CALIBRATION_START_S and the rough load time (``STARTUP_FILE`` in the workspace's calibration folder).
CALIBRATION_START_S = 25.0
CALIBRATION_PROBE_FACTOR = 4.0
STARTUP_FILE = "startup.json"
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
             calibrate: bool = True, test_rows: int | None = None,
             token_seconds: float | None = None) -> Estimate:
    """Time and peak memory of ``train_lora`` + the test evaluation, from token counts and a calibration.

    The calibration runs a few training steps of this run's batch shapes in a separate process on this
    machine (its own duration is estimated in ``calibration_seconds``; cached per model, device and shape in
    the workspace); ``calibrate=False`` uses a cached one or a rough rule scaled to the model's size (read
    from its config) and the device. ``fits`` is false when the peak would exceed the memory available now.
    ``token_seconds``: without a calibration, the training time per computed token to use instead of the
    model-size rule (e.g. ``compare.estimate.training_token_seconds``: the scoring speed measured on this
    machine); the calibration's own duration is then counted at that speed too.
    """
    from ..models import device as model_device
    from ..models import load_tokenizer, model_facts

    tokenizer = load_tokenizer(model_name)
    facts = model_facts(model_name)
    where = model_device()
    spec = prompt if prompt is not None else default_prompt(splits)
    train, _ = encode(splits.train, spec, tokenizer, settings.max_length)
    test = splits.test.head(test_rows) if test_rows else splits.test
    if len(train) == 0:
        raise DataError("There are no training rows to fine-tune on.")
    plan = _plan(train, settings)
    cached = _calibration(model_name, settings, plan, run=calibrate)
    rough = _rough(facts, plan, where, token_seconds=token_seconds, model_name=model_name)
    n_val = min(len(splits.validation), settings.validation_rows)
    checks = plan["steps"] // eval_interval(settings, plan["steps_per_epoch"]) + 1
    if cached:
        per_step = [cached["step_seconds"] + cached["token_seconds"] * tokens for tokens in plan["batch_tokens"]]
        steps_seconds = sum(per_step) * settings.epochs
        forward = cached["forward_token_seconds"]
        load_seconds, peak_mb = cached["load_seconds"], cached["peak_mb"] * CALIBRATION_MEMORY_MARGIN
    else:
        steps_seconds = plan["computed_tokens"] * rough["token_seconds"]
        forward = rough["token_seconds"] / 3
        load_seconds, peak_mb = rough["load_seconds"], rough["peak_mb"]
    mean_suffix = float(np.mean([len(s) + len(a) for s, a in zip(train.suffixes, train.answers)]))
    # validation checks run inside the training loop (and count in its time, as in TrainResult.train_seconds);
    # scoring the test rows loads the base model again and reads each row once per label or so
    train_seconds = steps_seconds + n_val * validation_tokens(spec, train, checks, mean_suffix) * forward
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
    if not cached and token_seconds:
        messages.append(f"From the speed measured on this machine ({token_seconds * 1000:.2f} ms per training "
                        "token, from the scoring speed): no training steps were timed for these settings yet; "
                        f"measuring takes about {_duration(rough['calibration_seconds'])}.")
    elif not cached:
        messages.append(f"A rough guess from the model's size ({facts.describe()}): no calibration has run "
                        "for this model on this machine yet; measuring takes about "
                        f"{_duration(rough['calibration_seconds'])}.")
    return Estimate(train_rows=len(train), validation_rows=n_val, test_rows=len(test), steps=plan["steps"],
                    checks=checks, tokens_per_example=round(float(np.mean(train.lengths())), 1),
                    computed_tokens=plan["computed_tokens"], load_seconds=round(load_seconds, 1),
                    train_seconds=round(train_seconds, 1), eval_seconds=round(eval_seconds, 1),
                    total_seconds=round(total, 1), peak_mb=round(peak_mb, 1), available_mb=round(available, 1),
                    fits=fits, calibrated=bool(cached), messages=messages, device=where,
                    model=dataclasses.asdict(facts),
                    calibration_seconds=0.0 if cached else round(rough["calibration_seconds"], 1))


def validation_tokens(spec: Any, train: Encoded, checks: int, mean_suffix: float) -> float:
    """Tokens one validation row costs over a run's checks, as the training loop scores them: for classification
    every check scores the row's tokens and all labels' answer trie (loss and accuracy in one pass); past
    ``LIVE_ACCURACY_MAX_LABELS`` labels a check computes the loss alone (the row with its own answer) and the
    kept adapter's accuracy is scored once, after training; text-to-text checks compute the loss alone."""
    from ..scoring import answer_trie
    from .loop import LIVE_ACCURACY_MAX_LABELS

    if spec.task != "classification" or not train.answers:
        return checks * mean_suffix
    labels = answer_trie(sorted({tuple(a) for a in train.answers})).fed
    mean_answer = float(np.mean([len(a) for a in train.answers]))
    scored = mean_suffix - mean_answer + labels
    if len(spec.labels) > LIVE_ACCURACY_MAX_LABELS:
        return checks * mean_suffix + scored
    return checks * scored


def _rough(facts: Any, plan: dict, where: str, token_seconds: float | None = None, model_name: str = "") -> dict:
    """Step time per token, load time, peak memory and the calibration's own duration, from the model's size
    (``token_seconds``: a measured time per training token instead; a calibration's start-up and load measured
    here before replace the rules for them)."""
    dtype_bytes = 2 if str(train_dtype()) in ("torch.bfloat16", "torch.float16") else 4
    flops = ROUGH_GPU_FLOPS if where == "cuda" else ROUGH_FLOPS
    # forward + backward: about 6 FLOPs per parameter per token
    token_seconds = token_seconds or 6 * facts.parameters / flops
    weights = facts.weights_mb(dtype_bytes)
    file_mb = facts.file_mb or facts.weights_mb(2)   # a hub model is usually stored in 16-bit
    measured = _startup(model_name)
    load_seconds = measured.get("load_seconds") or ROUGH_LOAD_FIXED_S + file_mb / ROUGH_LOAD_MB_PER_S
    start_seconds = measured.get("start_seconds") or CALIBRATION_START_S

    def activations(rows: int, width: int) -> float:
        tokens = rows * width + plan["prefix"]
        values = tokens * facts.layers * (10 * facts.hidden + 4 * facts.intermediate)
        return values * dtype_bytes * ACTIVATION_FACTOR / 2**20

    packed = plan.get("widest_packed")
    attention = 0.0
    if packed:
        tokens = packed[0] * packed[1] + plan["prefix"]
        attention = facts.layers * facts.heads * tokens**2 * dtype_bytes / 2**20
    base = ROUGH_BASE_MB.get(where, ROUGH_BASE_MB["cpu"])
    load_mb = base + (0.0 if where == "cuda" else file_mb) + weights
    train_mb = base + weights + max(activations(*plan["widest"]), attention + (activations(*packed) if packed else 0))
    # what _calibrate_here runs: a warm-up and 2 median steps on each thread count, the widest batch, the widest
    # packed one, one forward pass
    def step(shape: Any) -> float:
        return (shape[0] * shape[1] + plan["prefix"]) * token_seconds

    steps = 5 * CALIBRATION_PROBE_FACTOR * step(plan["median"]) + step(plan["widest"]) + \
        (step(packed) if packed else 0.0) + step(plan["median"]) / 3
    return {"token_seconds": token_seconds, "load_seconds": load_seconds,
            "peak_mb": max(load_mb, train_mb) * CALIBRATION_MEMORY_MARGIN,
            "calibration_seconds": start_seconds + load_seconds + steps}


def _startup(model_name: str) -> dict:
    """The last calibration's measured start-up and load for ``model_name`` ({} when none ran here)."""
    from ..store import workspace_dir

    try:
        found = json.loads((workspace_dir("calibration") / STARTUP_FILE).read_text(encoding="utf-8"))
        return {k: float(v) for k, v in found[str(model_name)].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _remember_startup(model_name: str, wall_seconds: float, measured: dict) -> None:
    """Keep a calibration's start-up (its wall time less its load and steps) and load, for the next label."""
    from ..store import workspace_dir

    path = workspace_dir("calibration") / STARTUP_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    start = wall_seconds - measured["load_seconds"] - measured.get("steps_seconds", 0.0)
    known[str(model_name)] = {"start_seconds": round(max(start, 1.0), 1),
                              "load_seconds": round(measured["load_seconds"], 1)}
    path.write_text(json.dumps(known), encoding="utf-8")


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
    from ..store import workspace_dir

    from ..models import device as model_device

    key = {"model": str(model_name), "device": model_device(), "dtype": str(train_dtype()), "rank": settings.rank,
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
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise PvfError("The calibration run failed, so no estimate could be made "
                       f"({(done.stderr.strip().splitlines() or ['no message'])[-1]}).")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    _remember_startup(model_name, time.perf_counter() - began, measured)
    path.write_text(json.dumps(measured), encoding="utf-8")
    return measured


def _calibrate_here(key: dict) -> dict:
    """Run in a fresh process: load the model, time training steps of two shapes, measure the peak."""
    import torch

    from .. import evaluate  # noqa: F401 - a real run holds the harness (and what it imports) too
    from ..models import load_model

    _accelerator()
    started = time.perf_counter()
    loaded = load_model(key["model"], dtype=train_dtype(), fresh=True)
    if key.get("eager"):
        _set_attention(loaded.model, "eager")
    settings = LoraSettings(rank=key["rank"], target_modules=key["targets"], dropout=0.0)
    model = add_lora(loaded.model, settings)
    load_seconds = time.perf_counter() - started
    stepping = time.perf_counter()
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
            "steps_seconds": time.perf_counter() - stepping,
            "peak_mb": _peak_rss_mb(), "threads": best, "measured": time.time()}


def _available_mb() -> float:
    """Memory free for a new process now (GPU memory on a CUDA machine)."""
    from ..models import available_mb

    return available_mb()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"

