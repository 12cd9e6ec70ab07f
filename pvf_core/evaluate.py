"""The one evaluation harness: any arm (a model, an optional LoRA adapter, a prompt) on the same test rows.

    evaluate(arm, test, task=..., train=...)         -> EvalResult (predictions, metrics, costs)
    evaluate_seeds(arm, test, ..., seeds=[0, 1, 2])   -> mean and spread over example draws
    score_labels(loaded, prompts, answers)            -> log-likelihood of each answer after each prompt
    generate_answers(loaded, prompts, ...)            -> greedy answers with a stop rule
    save_prompt_version(store, dataset_id, spec, result)

Classification is scored, not parsed: each label's answer tokens (its verbalizer + end of turn, see
``prompting.Renderer.answer_ids``) are scored after the row's prompt, and the label with the highest mean
log-probability per token wins (the mean, not the sum, so multi-token labels are not under-predicted).
The labels' probabilities are then calibrated: by default batch calibration, which divides out the
model's average leaning over the rows being classified and keeps the labels' training shares, so a
few-shot prompt that collapsed onto one label is pulled back (SST-2, 4 examples: 0.52 → 0.75) without
pushing a rare label up to an equal share.

Speed: the prompts of all rows usually start with the same tokens (system message + examples). That
shared prefix runs once; its key/value cache is expanded over each batch of rows, whose own tokens are
right-padded, with positions continuing after the prefix. Every label is scored in that same pass: the
row's last prompt token predicts each label's first token, and each multi-token label's remaining tokens
are packed after the row, seeing only the prefix, the row and themselves (a tree-shaped attention mask).
Logits are computed only at those positions. Text-to-text rows reuse the same prefix cache and are then
decoded greedily, batched.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .errors import ModelLoadError, PvfError, SettingsError
from .metrics import classification_metrics, collapse, label_shares, text_metrics
from .models import attention_mask_for
from .prompting import (CONTENT_FREE_TEXT, Example, PromptSpec, Renderer, examples_for, lint, prompt_budget,
                        select_examples)

__all__ = ["Arm", "EvalResult", "Stopped", "evaluate", "evaluate_seeds", "score_labels", "generate_answers",
           "calibrate", "classification_metrics", "text_metrics", "save_prompt_version", "load_arm_model"]

BATCH_TOKENS = 2048      # tokens per forward pass; larger passes gained nothing on 2 cores
LANE_TOKENS = 256        # rows are packed one after another into lanes of this many tokens
MAX_BATCH_ROWS = 64
KV_BUDGET_TOKENS = 32768  # rows × (shared prefix + row) tokens held in the key/value cache at once
GENERATION_BATCH_ROWS = 32
Progress = Callable[[int, int, str], None]


class Stopped(PvfError):
    """The caller asked the evaluation to stop (``should_stop`` returned true)."""


@dataclass
class Arm:
    """One side of the comparison: a model, an optional LoRA adapter and a prompt."""

    name: str
    prompt: PromptSpec
    model: str = "bundled"
    adapter: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "prompt": self.prompt.to_dict(), "model": self.model, "adapter": self.adapter}

    @classmethod
    def from_dict(cls, data: dict) -> "Arm":
        return cls(name=data["name"], prompt=PromptSpec.from_dict(data.get("prompt", {})),
                   model=data.get("model", "bundled"), adapter=data.get("adapter"))


@dataclass
class EvalResult:
    """What one arm did on the test rows: predictions, scores, and what it cost."""

    arm: str
    task: str
    n_test: int
    metrics: dict
    texts: list[str]
    references: list[str]
    predictions: list[str]
    label_scores: list[dict[str, float]] | None
    ms_per_example: float
    latencies_ms: list[float]
    prompt_tokens_per_row: float
    peak_rss_mb: float
    seconds: float
    calibration: str
    raw_label_scores: list[dict[str, float]] | None = None  # before calibration
    computed_tokens_per_row: float = 0.0  # tokens run per row: its own + answer tokens, the shared prefix once
    budget: dict = field(default_factory=dict)
    tips: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    spec: dict = field(default_factory=dict)
    model: str = ""  # the model that answered (with its adapter, if any)

    def summary(self) -> dict:
        """The result without per-row lists (for JSON output and the store)."""
        latencies = np.array(self.latencies_ms or [0.0])
        return {"arm": self.arm, "model": self.model, "task": self.task, "n_test": self.n_test, "metrics": self.metrics,
                "calibration": self.calibration, "seconds": round(self.seconds, 3),
                "ms_per_example": round(self.ms_per_example, 2),
                "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2),
                "latency_ms_p95": round(float(np.percentile(latencies, 95)), 2),
                "prompt_tokens_per_row": round(self.prompt_tokens_per_row, 1),
                "computed_tokens_per_row": round(self.computed_tokens_per_row, 1),
                "peak_rss_mb": round(self.peak_rss_mb, 1), "budget": self.budget, "tips": self.tips,
                "warnings": self.warnings, "spec": self.spec}

    def to_dict(self) -> dict:
        return asdict(self)

    def predictions_frame(self, scores: bool = True) -> pd.DataFrame:
        """One row per test row in test order: text,label,prediction (input,output,prediction for text-to-text);
        with ``scores`` also each label's probability (``p_<label>``)."""
        if self.task != "classification":
            return pd.DataFrame({"input": self.texts, "output": self.references, "prediction": self.predictions})
        frame = pd.DataFrame({"text": self.texts, "label": self.references, "prediction": self.predictions})
        if scores and self.label_scores:
            for label in self.label_scores[0]:
                frame[f"p_{label}"] = [round(s[label], 4) for s in self.label_scores]
        return frame


# -- loading ----------------------------------------------------------------------------------------------

def load_arm_model(arm: Arm, loaded: Any = None) -> Any:
    """The arm's model: ``loaded`` (or the shared copy) for the base model; a fresh base + adapter otherwise.

    The adapter is merged into the private copy's weights: same predictions as the wrapped model, without
    the adapter's extra work on every query.
    """
    from .models import LoadedModel, check_adapter_folder, load_model

    if not arm.adapter:
        return loaded if loaded is not None else load_model(arm.model)
    folder = check_adapter_folder(arm.adapter)
    from peft import PeftModel

    base = load_model(arm.model, fresh=True)
    try:
        model = PeftModel.from_pretrained(base.model, str(folder)).merge_and_unload()
    except Exception as error:  # noqa: BLE001 - a broken or mismatched adapter is the user's problem to fix
        raise ModelLoadError(f"The adapter in {folder} does not fit the model '{arm.model}' ({error}).",
                             "Use the model the adapter was trained on.") from error
    model.eval()
    return LoadedModel(name=f"{base.name} + {folder.name}", model=model, tokenizer=base.tokenizer, path=base.path)


# -- the engine: shared prefix, batched rows --------------------------------------------------------------

def _torch():
    import torch

    return torch


def _common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving at least one token of each prompt to run per row."""
    limit = max(min(len(p) for p in prompts) - 1, 0)
    first = np.asarray(prompts[0][:limit])
    for prompt in prompts[1:]:
        if limit <= 0:
            break
        same = np.asarray(prompt[:limit]) == first[:limit]
        limit = int(np.argmin(same)) if not same.all() else limit
    return max(limit, 0)


def _batches(lengths: Sequence[int], batch_tokens: int, max_rows: int, prefix: int = 0) -> list[list[int]]:
    """Row indices grouped longest first, so each batch pads little and stays under the token budgets.

    Each row also holds its own copy of the shared prefix's keys and values during the pass, so rows ×
    (prefix + width) stays under ``KV_BUDGET_TOKENS`` too (≈0.75 GB of cache for SmolLM2-135M in bf16).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        rows = len(current) + 1
        if current and (rows * width > batch_tokens or rows * (prefix + width) > KV_BUDGET_TOKENS
                        or rows > max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class _Runner:
    """Runs row suffixes after a shared prefix whose key/value cache is computed once."""

    def __init__(self, loaded: Any, prompts: Sequence[Sequence[int]], use_prefix_cache: bool = True) -> None:
        torch = _torch()
        self.model = loaded.model
        self.pad_id = int(loaded.tokenizer.pad_token_id or 0)
        self.prefix_length = _common_prefix_length(prompts) if use_prefix_cache else 0
        self.suffixes = [list(p[self.prefix_length:]) for p in prompts]
        self.prefix_kv: list[tuple[Any, Any]] = []
        if self.prefix_length:
            ids = torch.tensor([list(prompts[0][:self.prefix_length])])
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self.prefix_kv = [(layer[0], layer[1]) for layer in out.cache]

    def cache(self, rows: int) -> Any:
        """A fresh cache holding the shared prefix once per row (an empty one without a prefix)."""
        from transformers import DynamicCache

        if not self.prefix_kv:
            return DynamicCache(config=self.model.config)
        data = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self.prefix_kv]
        return DynamicCache(ddp_cache_data=data, config=self.model.config)

    def run(self, rows: list[int]) -> tuple[Any, Any, Any, Any]:
        """Forward the suffixes of ``rows`` (right-padded) for generation.

        Returns the log-probs at each row's last token, the cache, the 2-D attention mask and the lengths.
        """
        torch = _torch()
        lengths = torch.tensor([len(self.suffixes[i]) for i in rows])
        width, count, start = int(lengths.max()), len(rows), self.prefix_length
        ids = torch.full((count, width), self.pad_id, dtype=torch.long)
        for b, i in enumerate(rows):
            ids[b, :len(self.suffixes[i])] = torch.tensor(self.suffixes[i])
        mask = torch.ones((count, start + width), dtype=torch.long)
        mask[:, start:] = torch.arange(width)[None, :] < lengths[:, None]
        keep = torch.zeros((count, width), dtype=torch.bool)
        keep[torch.arange(count), lengths - 1] = True
        positions = (start + torch.arange(width))[None, :].expand(count, -1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=self.cache(count),
                         use_cache=True, logits_to_keep=keep)
        logits = out.logits.reshape(count, -1)
        return torch.log_softmax(logits.float(), dim=-1), out.cache, mask, lengths


def _answer_layout(answers: list[list[int]]) -> tuple[list[list[int]], list[tuple[int, int, int]]]:
    """What is fed after each row, and which (slot, token, answer) log-probs add up to each answer's score.

    Slot 0 is the row's last prompt token (it predicts every answer's first token); an answer of n tokens
    feeds its first n - 1 tokens after the row, and the slot of its token t predicts token t + 1.
    """
    feeds: list[list[int]] = []
    picks = [(0, answer[0], j) for j, answer in enumerate(answers)]
    slot = 1
    for j, answer in enumerate(answers):
        if len(answer) > 1:
            feeds.append(answer[:-1])
            picks += [(slot + t, answer[t + 1], j) for t in range(len(answer) - 1)]
            slot += len(answer) - 1
    return feeds, picks


def _lanes(widths: Sequence[int], lane_tokens: int) -> list[list[int]]:
    """Rows packed one after another into lanes of about ``lane_tokens`` (first fit, longest first).

    Packing several rows into one lane means the shared prefix is copied once per lane, not once per row,
    and almost no padding is computed; a row longer than a lane gets a lane of its own.
    """
    lanes: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(widths)), key=lambda i: -widths[i]):
        fit = next((j for j, free in enumerate(room) if free >= widths[i]), None)
        if fit is None:
            lanes.append([])
            room.append(max(lane_tokens, widths[i]))
            fit = len(lanes) - 1
        lanes[fit].append(i)
        room[fit] -= widths[i]
    return lanes


def _packed_inputs(runner: _Runner, lanes: list[list[int]], feeds: list[list[int]]) -> dict[str, Any]:
    """Inputs for one forward pass that scores every answer of every row in ``lanes``.

    In a lane each row holds its prompt suffix (n tokens), then each multi-token answer's tokens. A row's
    tokens attend to the shared prefix and to the row's own earlier tokens; an answer's tokens to the
    prefix, the row's suffix and the answer's own earlier tokens (a tree of continuations). Positions
    restart after the prefix for every row.
    """
    torch = _torch()
    start = runner.prefix_length
    extra = sum(len(f) for f in feeds)
    width = max(sum(len(runner.suffixes[i]) + extra for i in lane) for lane in lanes)
    count = len(lanes)
    ids = torch.full((count, width), runner.pad_id, dtype=torch.long)
    positions = torch.full((count, width), start, dtype=torch.long)
    allowed = torch.zeros((count, width, start + width), dtype=torch.bool)
    allowed[:, :, :start] = True
    allowed[:, torch.arange(width), start + torch.arange(width)] = True  # padding attends to itself: no empty rows
    keep = torch.zeros((count, width), dtype=torch.bool)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    for b, lane in enumerate(lanes):
        offset = 0
        for i in lane:
            n = len(runner.suffixes[i])
            ids[b, offset:offset + n] = torch.tensor(runner.suffixes[i])
            positions[b, offset:offset + n] = start + torch.arange(n)
            allowed[b, offset:offset + n, start + offset:start + offset + n] = causal[:n, :n]
            keep[b, offset + n - 1] = True
            tail = offset + n
            for feed in feeds:
                span = slice(tail, tail + len(feed))
                ids[b, span] = torch.tensor(feed)
                positions[b, span] = start + n + torch.arange(len(feed))
                allowed[b, span, start + offset:start + offset + n] = True
                allowed[b, span, start + tail:start + tail + len(feed)] = causal[:len(feed), :len(feed)]
                keep[b, span] = True
                tail += len(feed)
            offset = tail
    return {"input_ids": ids, "position_ids": positions, "attention_mask": attention_mask_for(runner.model, allowed[:, None]),
            "logits_to_keep": keep}


def score_labels(loaded: Any, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], *,
                 normalise: bool = True, use_prefix_cache: bool = True, batch_tokens: int = BATCH_TOKENS,
                 lane_tokens: int = LANE_TOKENS, max_lanes: int = MAX_BATCH_ROWS,
                 on_batch: Callable[[list[int], float], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Log-likelihood of each answer after each prompt, as an array [prompts, answers].

    ``normalise`` divides by the answer's token count (mean log-prob per token). Rows are packed into
    lanes of ``lane_tokens`` and lanes into passes of ``batch_tokens``. ``on_batch(rows, seconds)`` is
    called after each pass.
    """
    torch = _torch()
    answers = [list(a) for a in answers]
    if any(not a for a in answers):
        raise SettingsError("A label has no tokens to score; give every label a word.")
    scores = np.zeros((len(prompts), len(answers)), dtype=np.float64)
    if not prompts:
        return scores
    feeds, picks = _answer_layout(answers)
    slots, tokens = torch.tensor([p[0] for p in picks]), torch.tensor([p[1] for p in picks])
    owner = torch.zeros((len(picks), len(answers)), dtype=torch.float64)
    owner[torch.arange(len(picks)), torch.tensor([p[2] for p in picks])] = 1.0
    divisor = np.array([len(a) for a in answers], dtype=np.float64) if normalise else 1.0
    extra = sum(len(f) for f in feeds)
    with torch.inference_mode():
        runner = _Runner(loaded, prompts, use_prefix_cache)
        widths = [len(s) + extra for s in runner.suffixes]
        lanes = _lanes(widths, lane_tokens)
        lane_widths = [sum(widths[i] for i in lane) for lane in lanes]
        for group in _batches(lane_widths, batch_tokens, max_lanes, runner.prefix_length):
            if should_stop and should_stop():
                raise Stopped("The evaluation was stopped.")
            started = time.perf_counter()
            chosen = [lanes[g] for g in group]
            rows = [i for lane in chosen for i in lane]  # the order the kept logits come out in
            out = runner.model(**_packed_inputs(runner, chosen, feeds), cache=runner.cache(len(chosen)),
                               use_cache=True)
            logprobs = torch.log_softmax(out.logits.float(), dim=-1).reshape(len(rows), 1 + extra, -1)
            picked = logprobs[:, slots, tokens].double()  # [rows, picks]
            scores[rows] = (picked @ owner).numpy() / divisor
            if on_batch:
                on_batch(rows, time.perf_counter() - started)
    return scores


def generate_answers(loaded: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int | Sequence[int],
                     stop_ids: set[int], stop_at_newline: bool = True, use_prefix_cache: bool = True,
                     batch_rows: int = GENERATION_BATCH_ROWS,
                     on_batch: Callable[[list[int], float], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> list[str]:
    """Greedy answers for each prompt, batched, sharing the prompts' common prefix.

    A row stops at a token in ``stop_ids``, at its ``max_new_tokens``, or (``stop_at_newline``) at a
    line break after some text.
    """
    torch = _torch()
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    answers = [""] * len(prompts)
    with torch.inference_mode():
        runner = _Runner(loaded, prompts, use_prefix_cache)
        widest = max(limits, default=0)
        for rows in _batches([len(s) + widest for s in runner.suffixes], 10**9, batch_rows, runner.prefix_length):
            if should_stop and should_stop():
                raise Stopped("The evaluation was stopped.")
            started = time.perf_counter()
            for i, text in zip(rows, _generate_batch(runner, loaded.tokenizer, rows, [limits[i] for i in rows],
                                                     stop_ids, stop_at_newline)):
                answers[i] = text
            if on_batch:
                on_batch(rows, time.perf_counter() - started)
    return answers


def _generate_batch(runner: _Runner, tokenizer: Any, rows: list[int], limits: list[int], stop_ids: set[int],
                    stop_at_newline: bool) -> list[str]:
    torch = _torch()
    logprobs, cache, mask, lengths = runner.run(rows)
    count = len(rows)
    done = [False] * count
    generated: list[list[int]] = [[] for _ in range(count)]
    next_tokens = logprobs.argmax(-1)
    positions = runner.prefix_length + lengths
    for step in range(max(limits)):
        for b in range(count):
            token = int(next_tokens[b])
            if done[b]:
                continue
            if token in stop_ids or step >= limits[b]:
                done[b] = True
                continue
            generated[b].append(token)
            if stop_at_newline and "\n" in tokenizer.decode(generated[b]).lstrip():
                done[b] = True
        if all(done):
            break
        feed = torch.where(torch.tensor(done), torch.tensor(runner.pad_id), next_tokens)[:, None]
        mask = torch.cat([mask, torch.ones((count, 1), dtype=mask.dtype)], dim=1)
        out = runner.model(input_ids=feed, attention_mask=mask, position_ids=(positions + step)[:, None],
                           cache=cache, use_cache=True)
        cache = out.cache
        next_tokens = out.logits[:, -1].argmax(-1)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]
    return [(t.strip().split("\n")[0] if stop_at_newline else t).strip() for t in texts]


# -- calibration ------------------------------------------------------------------------------------------

def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def calibrate(scores: np.ndarray, method: str, content_free: np.ndarray | None = None,
              label_shares: np.ndarray | None = None) -> np.ndarray:
    """Label probabilities [rows, labels] from label scores, corrected for the model's leaning.

    batch: divide each label's probability by its mean over the rows being classified (Zhou et al. 2023),
    then multiply by ``label_shares``, how common each label is in the training rows (uniform if not
    given). Without that last step a rare label would be pushed up to an equal share: on SMS spam (13 %
    spam) zero-shot accuracy fell from 0.86 to 0.44; with it, 0.85.
    content-free: divide by the probabilities for an empty text ("N/A"; Zhao et al. 2021).
    """
    probs = _softmax(scores)
    if method == "none" or len(probs) == 0:
        return probs
    if method == "batch":
        leaning = probs.mean(axis=0)
        if label_shares is not None:
            leaning = leaning / np.maximum(np.asarray(label_shares, dtype=np.float64), 1e-12)
    elif method == "content-free":
        if content_free is None:
            raise ValueError("content-free calibration needs the content-free scores")
        leaning = _softmax(np.asarray(content_free, dtype=np.float64).reshape(-1))
    else:
        raise SettingsError(f"Unknown calibration '{method}'; use batch, content-free or none.")
    adjusted = probs / np.maximum(leaning, 1e-12)
    return adjusted / adjusted.sum(axis=-1, keepdims=True)


def training_label_shares(train: pd.DataFrame | None, labels: Sequence[str]) -> np.ndarray | None:
    """How common each label is among the training rows (add-one smoothed), or None without them."""
    if train is None or len(train) == 0:
        return None
    counts = train["label"].astype(str).value_counts().reindex(list(labels), fill_value=0).to_numpy(float) + 1
    return counts / counts.sum()


# -- the harness ------------------------------------------------------------------------------------------

def _resolve_labels(spec: PromptSpec, task: str, labels: Sequence[str] | None, test: pd.DataFrame,
                    train: pd.DataFrame | None) -> PromptSpec:
    if task != "classification":
        return spec.with_(task=task, labels=[], verbalizers={})
    if spec.labels:
        return spec.with_(task=task)
    found = list(labels) if labels else sorted({str(x) for x in test["label"]} |
                                              ({str(x) for x in train["label"]} if train is not None else set()))
    return spec.with_(task=task, labels=found)


class _Clock:
    """Per-row amortised latencies and progress reports, batch by batch."""

    def __init__(self, total: int, on_progress: Progress | None, what: str) -> None:
        self.latencies = [0.0] * total
        self.done, self.total, self.on_progress, self.what = 0, total, on_progress, what

    def __call__(self, rows: list[int], seconds: float) -> None:
        for i in rows:
            self.latencies[i] = seconds * 1000 / len(rows)
        self.done += len(rows)
        if self.on_progress:
            self.on_progress(self.done, self.total, f"{self.what} {self.done}/{self.total} rows")


def evaluate(arm: Arm, test: pd.DataFrame, *, task: str, labels: list[str] | None = None,
             train: pd.DataFrame | None = None, loaded: Any = None, on_progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> EvalResult:
    """Run one arm on every test row (columns text, label) and measure quality and cost.

    ``train`` is the pool few-shot examples are drawn from; ``loaded`` an already loaded base model to
    reuse (an arm with an adapter always gets a fresh copy of its base model).
    """
    started = time.perf_counter()
    model = load_arm_model(arm, loaded)
    return _evaluate_loaded(arm, model, test, task=task, labels=labels, train=train, on_progress=on_progress,
                            should_stop=should_stop, started=started)


def _evaluate_loaded(arm: Arm, loaded: Any, test: pd.DataFrame, *, task: str, labels: Sequence[str] | None,
                     train: pd.DataFrame | None, on_progress: Progress | None,
                     should_stop: Callable[[], bool] | None, started: float) -> EvalResult:
    if len(test) == 0:
        raise SettingsError("There are no test rows to evaluate.")
    spec = _resolve_labels(arm.prompt, task, labels, test, train)
    texts, references = [str(t) for t in test["text"]], [str(x) for x in test["label"]]
    eval_started = time.perf_counter()
    renderer = Renderer(spec, loaded.tokenizer)
    example_sets = [examples_for(train, ids) for ids in select_examples(spec, train, texts)]
    room = loaded.context_length - (spec.max_answer_tokens if task != "classification" else
                                    max(len(renderer.answer_ids(label)) for label in spec.labels))
    prompts = [renderer.prompt_ids(text, examples, max_tokens=room) for text, examples in zip(texts, example_sets)]
    clock = _Clock(len(texts), on_progress, "Scored" if task == "classification" else "Answered")
    if task == "classification":
        outcome = _classify(spec, loaded, renderer, prompts, example_sets[0], references, clock, should_stop,
                            training_label_shares(train, spec.labels))
    else:
        outcome = _generate(spec, loaded, renderer, prompts, texts, references, clock, should_stop)
    eval_seconds = time.perf_counter() - eval_started
    budget = prompt_budget(spec, loaded.tokenizer, loaded.context_length, examples=example_sets[0],
                           row_texts=texts, pool=train)
    shared = _common_prefix_length(prompts)
    return EvalResult(
        arm=arm.name, task=task, n_test=len(texts), texts=texts, references=references,
        ms_per_example=eval_seconds * 1000 / len(texts), latencies_ms=clock.latencies,
        prompt_tokens_per_row=float(np.mean([len(p) for p in prompts])),
        computed_tokens_per_row=float(np.mean([len(p) - shared for p in prompts]) + shared / len(prompts)
                                      + outcome["answer_tokens_per_row"]),
        peak_rss_mb=_peak_rss_mb(), seconds=time.perf_counter() - started, calibration=outcome["calibration"],
        metrics=outcome["metrics"], predictions=outcome["predictions"], label_scores=outcome.get("label_scores"),
        raw_label_scores=outcome.get("raw_label_scores"), budget=budget.to_dict(),
        tips=[t.to_dict() for t in lint(spec, examples=example_sets[0], test_texts=texts, budget=budget)],
        warnings=_label_warnings(spec, references) + _cut_warnings(prompts, room), spec=spec.to_dict(),
        model=getattr(loaded, "name", ""))


def _classify(spec: PromptSpec, loaded: Any, renderer: Renderer, prompts: list[list[int]],
              examples: list[Example], references: list[str], clock: _Clock,
              should_stop: Callable[[], bool] | None, shares: np.ndarray | None) -> dict:
    labels = spec.labels
    answers = [renderer.answer_ids(label) for label in labels]
    scores = score_labels(loaded, prompts, answers, on_batch=clock, should_stop=should_stop)
    content_free = None
    if spec.calibration == "content-free":
        content_free = score_labels(loaded, [renderer.prompt_ids(CONTENT_FREE_TEXT, examples)], answers)[0]
    raw = calibrate(scores, "none")
    probs = calibrate(scores, spec.calibration, content_free, shares)
    raw_predictions = [labels[i] for i in raw.argmax(axis=1)]
    predictions = [labels[i] for i in probs.argmax(axis=1)]
    metrics = _classification_report(references, predictions, raw_predictions, labels)
    metrics["calibration"] = spec.calibration
    if spec.calibration == "batch" and shares is not None:
        metrics["calibration_label_shares"] = {label: float(x) for label, x in zip(labels, shares)}

    def as_dicts(table: np.ndarray) -> list[dict[str, float]]:
        return [{label: float(p) for label, p in zip(labels, row)} for row in table]

    return {"metrics": metrics, "predictions": predictions, "label_scores": as_dicts(probs),
            "raw_label_scores": as_dicts(raw), "calibration": spec.calibration,
            "answer_tokens_per_row": sum(len(a) - 1 for a in answers)}


def _classification_report(references: list[str], predictions: list[str], raw_predictions: list[str],
                           labels: list[str]) -> dict:
    """Metrics after calibration, plus the raw ones and who got which label, to show what calibration did."""
    metrics = classification_metrics(references, predictions, labels)
    raw = classification_metrics(references, raw_predictions, labels)
    metrics["prediction_shares"] = label_shares(predictions, labels)
    metrics["true_shares"] = label_shares(references, labels)
    metrics["collapse"] = collapse(predictions, references, labels)
    metrics["raw"] = {"accuracy": raw["accuracy"], "macro_f1": raw["macro_f1"],
                      "prediction_shares": label_shares(raw_predictions, labels),
                      "collapse": collapse(raw_predictions, references, labels)}
    return metrics


def _generate(spec: PromptSpec, loaded: Any, renderer: Renderer, prompts: list[list[int]], texts: list[str],
              references: list[str], clock: _Clock, should_stop: Callable[[], bool] | None) -> dict:
    # A row's answer may be at most twice its input plus a little: small models otherwise ramble on.
    limits = [min(spec.max_answer_tokens, 2 * len(renderer.encode(t)) + 16) for t in texts]
    predictions = generate_answers(loaded, prompts, max_new_tokens=limits, stop_ids=renderer.stop_ids(),
                                   stop_at_newline=spec.stop_at_newline, on_batch=clock, should_stop=should_stop)
    return {"metrics": text_metrics(references, predictions), "predictions": predictions, "calibration": "none",
            "answer_tokens_per_row": float(np.mean([len(renderer.encode(p)) for p in predictions]))}


def _label_warnings(spec: PromptSpec, references: list[str]) -> list[dict]:
    if spec.task != "classification":
        return []
    unknown = sorted(set(references) - set(spec.labels))
    if not unknown:
        return []
    return [{"code": "unknown_labels", "message": f"{len(unknown)} test label(s) are not among the labels the "
             f"model chooses from ({', '.join(unknown[:5])}); those rows are always counted wrong.",
             "numbers": {"labels": unknown}}]


def _cut_warnings(prompts: list[list[int]], room: int) -> list[dict]:
    cut = sum(len(p) >= room for p in prompts)
    if not cut:
        return []
    return [{"code": "rows_cut", "message": f"{cut} row(s) were too long for the model's context and were cut.",
             "numbers": {"rows": cut}}]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- variance over example draws --------------------------------------------------------------------------

def evaluate_seeds(arm: Arm, test: pd.DataFrame, *, task: str, labels: list[str] | None = None,
                   train: pd.DataFrame | None = None, loaded: Any = None, seeds: Sequence[int] = (0, 1, 2),
                   on_progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict:
    """Rerun the arm with several example draws (seeds): mean, spread and each run.

    Zero-shot, 'similar' and hand-picked prompts do not depend on the seed, so they run once.
    """
    model = load_arm_model(arm, loaded)
    depends = arm.prompt.n_examples > 0 and arm.prompt.selection in ("random", "balanced")
    seeds = list(seeds) if depends else list(seeds)[:1]
    key = "accuracy" if task == "classification" else "chrf"
    results = []
    for n, seed in enumerate(seeds):
        seeded = Arm(arm.name, arm.prompt.with_(seed=int(seed)), arm.model, adapter=None)

        def progress(done: int, total: int, message: str, n: int = n) -> None:
            if on_progress:
                on_progress(n * total + done, len(seeds) * total, f"seed {seeds[n]}: {message}")

        results.append(_evaluate_loaded(seeded, model, test, task=task, labels=labels, train=train,
                                        on_progress=progress, should_stop=should_stop,
                                        started=time.perf_counter()))
    values = np.array([r.metrics[key] for r in results], dtype=float)
    summary = {"metric": key, "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
               else 0.0, "min": float(values.min()), "max": float(values.max()),
               "per_seed": [{"seed": int(s), key: float(v), **({"raw_accuracy": r.metrics["raw"]["accuracy"]}
                                                              if key == "accuracy" else {})}
                            for s, v, r in zip(seeds, values, results)],
               "results": results}
    if not depends:
        summary["note"] = "These examples do not depend on the seed, so one run was enough."
    return summary


# -- prompt versions in the store -------------------------------------------------------------------------

def save_prompt_version(store: Any, dataset_id: int | None, spec: PromptSpec, result: EvalResult,
                        name: str | None = None) -> int:
    """Save a scored prompt: a finished 'prompt' run with its metrics and timings, and a prompt version."""
    existing = store.list_prompt_versions(dataset_id)
    name = name or f"v{len(existing) + 1} ({result.arm})"
    run_id = store.add_run("prompt", dataset_id=dataset_id, name=name, settings={**spec.to_dict(), "model": result.model},
                           status="done")
    summary = result.summary()
    metrics = {k: v for k, v in result.metrics.items()}
    timings = {k: summary[k] for k in ("seconds", "ms_per_example", "latency_ms_p50", "latency_ms_p95",
                                       "prompt_tokens_per_row", "computed_tokens_per_row", "peak_rss_mb")}
    store.update_run(run_id, metrics=metrics, timings={**timings, "n_test": result.n_test})
    return store.add_prompt_version(dataset_id=dataset_id, name=name, spec=spec.to_dict(), run_id=run_id)
