"""The one evaluation harness: any arm (a model, an optional LoRA adapter, a prompt) on the same test rows.

    evaluate(arm, test, task=..., train=...)         -> EvalResult (predictions, metrics, costs)
    evaluate_seeds(arm, test, ..., seeds=[0, 1, 2])   -> mean and spread over example draws
    score_labels(loaded, prompts, answers)            -> log-likelihood of each answer after each prompt
    generate_answers(loaded, prompts, ...)            -> greedy answers with a stop rule
    save_prompt_version(store, dataset_id, spec, result)

Classification is scored, not parsed: each label's answer tokens (its verbalizer + end of turn, see
``prompting.Renderer.answer_ids``) are scored after the row's prompt, and the label with the highest mean
log-probability per token wins (the mean, not the sum, so multi-token labels are not under-predicted).
The labels' probabilities are then calibrated with a fixed per-label bias (``calibration.py``) that is
fitted once on rows that are never scored (the validation rows, else the training rows) and applied to
each row on its own, so a row's prediction never depends on which other rows are scored and a deployed
arm reproduces it one query at a time. By default ("auto") the fitting rows also choose between no
calibration, content-free and fitted, the same way for every arm, fine-tuned ones included.

Speed: the prompts of all rows usually start with the same tokens (system message + examples). That
shared prefix runs once; its key/value cache is expanded over each batch of rows, whose own tokens are
right-padded, with positions continuing after the prefix. Every label is scored in that same pass: the
row's last prompt token predicts each label's first token, and each multi-token label's remaining tokens
are packed after the row, seeing only the prefix, the row and themselves (a tree-shaped attention mask).
Logits are computed only at those positions. With many labels (``PRUNE_FROM_LABELS``) a row's labels are
first bounded by their first token, and only those that can still win (after the arm's calibration, or raw)
are scored in full: the same predictions as scoring every label; a label not scored gets probability 0 in the
views and the ``labels_pruned`` warning says how many were scored. Text-to-text rows reuse the same prefix
cache and are then decoded greedily, batched.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from . import calibration as calib
from .calibration import Calibration
from .errors import ModelLoadError, SettingsError
from .metrics import classification_metrics, collapse, label_shares, text_metrics
from .scoring import (BATCH_TOKENS, GENERATION_BATCH_ROWS, KV_BUDGET_TOKENS, LANE_TOKENS,  # noqa: F401
                      MAX_BATCH_ROWS, Stopped, _batches, _common_prefix_length, _lanes, answer_trie, generate_answers,
                      one_query_at_a_time, score_labels)
from .prompting import (CONTENT_FREE_TEXT, Example, PromptSpec, Renderer, examples_for, lint, prompt_budget,
                        select_examples)

__all__ = ["Arm", "EvalResult", "Stopped", "evaluate", "evaluate_seeds", "score_labels", "generate_answers",
           "calibrate", "classification_metrics", "text_metrics", "save_prompt_version", "load_arm_model",
           "LATENCY_ROWS"]

LATENCY_ROWS = 30  # test rows timed one query at a time, as a deployed arm answers them
# From this many labels on, only the labels that can still win are scored (scoring.score_labels' prune_bias,
# with the arm's calibration and zeros): the same predictions, raw and calibrated, as scoring every label.
PRUNE_FROM_LABELS = 21
# Pruning an unsure model's rows computes nearly every label and adds a pass: with 150 labels zero-shot (97 % of
# scores computed) it took 0.85-0.93 s per row against 0.70-0.78 s for scoring every label (bench/bench_labels.py
# setup, quiet machine). An arm whose fitting rows needed more than this share of their scores is not pruned.
PRUNE_PAYS_BELOW = 0.6
Progress = Callable[[int, int, str], None]


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
    ms_per_example: float  # evaluation time of all rows (batched) / rows: throughput, not latency
    latencies_ms: list[float]  # single-query latencies of the first LATENCY_ROWS rows, each scored on its own
    prompt_tokens_per_row: float
    peak_rss_mb: float  # the process's peak so far (what the CLI reports); see memory_mb for this arm's own
    seconds: float
    calibration: Any  # {method, fitted_on, rows} (a method name in results saved before)
    raw_label_scores: list[dict[str, float]] | None = None  # before calibration
    computed_tokens_per_row: float = 0.0  # tokens run per row: its own + answer tokens, the shared prefix once
    budget: dict = field(default_factory=dict)
    tips: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    spec: dict = field(default_factory=dict)
    model: str = ""  # the model that answered (with its adapter, if any)
    calibration_fit: dict = field(default_factory=dict)  # Calibration.to_dict(): what a deployed arm applies
    ms_per_token: float = 0.0  # the model's measured time per computed token (same for arms of one model)
    memory_mb: float = 0.0  # this arm's inference memory: weights + the rise while scoring
    base_model: str = ""  # the base model's name (bundled, a folder or a hub id), without the adapter
    search: dict | None = None  # how a searched prompt was found (``SearchResult.to_dict()``), else None

    @property
    def latency_ms(self) -> dict:
        """p50/p95 of answering one query at a time, and on how many rows that was measured."""
        values = np.array(self.latencies_ms or [float("nan")])
        return {"p50": round(float(np.percentile(values, 50)), 2), "p95": round(float(np.percentile(values, 95)), 2),
                "rows": len(self.latencies_ms or [])}

    @property
    def calibration_summary(self) -> dict:
        if isinstance(self.calibration, dict):
            return self.calibration
        return {"method": str(self.calibration or "none"), "fitted_on": None, "rows": 0}  # saved before

    def summary(self) -> dict:
        """The result without per-row lists (for JSON output and the store)."""
        latency = self.latency_ms
        return {"arm": self.arm, "model": self.model, "task": self.task, "n_test": self.n_test, "metrics": self.metrics,
                "calibration": self.calibration_summary, "seconds": round(self.seconds, 3),
                "ms_per_example": round(self.ms_per_example, 2), "latency_ms": latency,
                "latency_ms_p50": latency["p50"], "latency_ms_p95": latency["p95"],
                "prompt_tokens_per_row": round(self.prompt_tokens_per_row, 1),
                "computed_tokens_per_row": round(self.computed_tokens_per_row, 1),
                "ms_per_token": round(self.ms_per_token, 4), "memory_mb": round(self.memory_mb, 1),
                "peak_rss_mb": round(self.peak_rss_mb, 1), "budget": self.budget, "tips": self.tips,
                "warnings": self.warnings, "spec": self.spec} | ({"search": self.search} if self.search else {})

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


# -- calibration ------------------------------------------------------------------------------------------

def calibrate(scores: np.ndarray, method: str, content_free: np.ndarray | None = None) -> np.ndarray:
    """Label probabilities from label scores with a calibration that needs no fitting rows (none, content-free).

    Fitted calibrations are made once with ``calibration.fitted`` / ``calibration.choose`` on rows that are
    never scored, and applied with ``Calibration.apply``.
    """
    if calib.normalise_method(method) == "fitted":
        raise SettingsError("A fitted calibration is fitted once on rows that are not scored; use "
                            "calibration.fitted(...).apply(scores).")
    labels = [str(i) for i in range(np.shape(scores)[-1])]
    return calib.build(method, labels, content_free_scores=content_free).apply(scores)


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
    """Progress reports batch by batch, and this arm's resident memory at each batch (its peak).

    The rows a calibration is fitted on count in the arm's progress before its test rows (``fitting``), so the
    share done, and any time left drawn from it, includes that work."""

    def __init__(self, total: int, on_progress: Progress | None, what: str) -> None:
        self.done, self.total, self.on_progress, self.what = 0, total, on_progress, what
        self.fitting, self.fitted, self.fitting_what = 0, 0, ""
        self.rss_start = self.rss_peak = _rss_mb()

    def expect_fitting(self, rows: int, fitted_on: str) -> None:
        """The calibration will score ``rows`` rows of the ``fitted_on`` split before the test rows."""
        self.fitting, self.fitting_what = rows, fitted_on

    def fitting_batch(self, rows: list[int], seconds: float) -> None:
        self.fitted += len(rows)
        self._report(f"Calibrating on {self.fitted}/{self.fitting} {self.fitting_what} rows")

    def start_test_rows(self) -> None:
        """The arm's memory is measured from here (the test rows' batches)."""
        self.rss_start = self.rss_peak = _rss_mb()

    def __call__(self, rows: list[int], seconds: float) -> None:
        self.rss_peak = max(self.rss_peak, _rss_mb())
        self.done += len(rows)
        self._report(f"{self.what} {self.done}/{self.total} rows")

    def _report(self, message: str) -> None:
        if self.on_progress:
            self.on_progress(self.fitted + self.done, self.fitting + self.total, message)


def evaluate(arm: Arm, test: pd.DataFrame, *, task: str, labels: list[str] | None = None,
             train: pd.DataFrame | None = None, loaded: Any = None, calibration_rows: pd.DataFrame | None = None,
             calibration: Calibration | None = None, on_progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> EvalResult:
    """Run one arm on every test row (columns text, label) and measure quality and cost.

    ``train`` is the pool few-shot examples are drawn from; ``loaded`` an already loaded base model to
    reuse (an arm with an adapter always gets a fresh copy of its base model). The arm's calibration is
    ``calibration`` when given (a saved arm's), else fitted on ``calibration_rows`` (the validation split)
    or, without them, on the training rows; test rows are never used for it.
    """
    started = time.perf_counter()
    model = load_arm_model(arm, loaded)
    return _evaluate_loaded(arm, model, test, task=task, labels=labels, train=train, on_progress=on_progress,
                            should_stop=should_stop, started=started, calibration_rows=calibration_rows,
                            calibration=calibration)


def _evaluate_loaded(arm: Arm, loaded: Any, test: pd.DataFrame, *, task: str, labels: Sequence[str] | None,
                     train: pd.DataFrame | None, on_progress: Progress | None,
                     should_stop: Callable[[], bool] | None, started: float,
                     calibration_rows: pd.DataFrame | None = None,
                     calibration: Calibration | None = None, latency_rows: int = LATENCY_ROWS) -> EvalResult:
    if len(test) == 0:
        raise SettingsError("There are no test rows to evaluate.")
    spec = _resolve_labels(arm.prompt, task, labels, test, train)
    texts, references = [str(t) for t in test["text"]], [str(x) for x in test["label"]]
    renderer = Renderer(spec, loaded.tokenizer)
    room = loaded.context_length - (spec.max_answer_tokens if task != "classification" else
                                    max(len(renderer.answer_ids(label)) for label in spec.labels))
    prompter = _Prompter(spec, renderer, train, room)
    pruning: dict = {}  # how much pruning saved on the fitting rows, when they were pruned
    clock = _Clock(len(texts), on_progress, "Scored" if task == "classification" else "Answered")
    if task == "classification" and calibration is None:
        calibration = _fit_calibration(spec, loaded, renderer, prompter, train, calibration_rows, should_stop,
                                       pruning, clock)
    eval_started = time.perf_counter()
    prompts, example_sets = prompter.prompts(texts)
    clock.start_test_rows()
    if task == "classification":
        answers = [renderer.answer_ids(label) for label in spec.labels]
        prune, stats = _prune_biases(calibration, pruning.get("labels_scored")), {}
        scores = score_labels(loaded, prompts, answers, on_batch=clock, should_stop=should_stop, prune_bias=prune,
                              stats=stats)
        outcome = _classify(spec, scores, calibration, references, answers)
        outcome["answer_tokens_per_row"] = stats["answer_tokens_per_row"]
        outcome["labels_scored"] = stats["labels_scored"]
        timed = _one_at_a_time(loaded, prompts, latency_rows, should_stop, answers=answers, prune_bias=prune)
        alone = [spec.labels[int(i)] for i in calibration.apply(np.array(timed[0])).argmax(axis=1)] if timed[0] else []
    else:
        outcome = _generate(spec, loaded, renderer, prompts, texts, references, clock, should_stop)
        timed = _one_at_a_time(loaded, prompts, latency_rows, should_stop, max_new_tokens=outcome["limits"],
                               stop_ids=renderer.stop_ids(), stop_at_newline=spec.stop_at_newline)
        alone = timed[0]
    eval_seconds = time.perf_counter() - eval_started
    latencies = timed[1]
    agreement = float(np.mean([a == b for a, b in zip(alone, outcome["predictions"])])) if alone else 1.0
    budget = prompt_budget(spec, loaded.tokenizer, loaded.context_length, examples=example_sets[0],
                           row_texts=texts, pool=train)
    shared = _common_prefix_length(prompts)
    warnings = _label_warnings(spec, references) + _cut_warnings(prompts, room) + _agreement_warnings(agreement)
    return EvalResult(
        arm=arm.name, task=task, n_test=len(texts), texts=texts, references=references,
        ms_per_example=eval_seconds * 1000 / len(texts), latencies_ms=latencies,
        prompt_tokens_per_row=float(np.mean([len(p) for p in prompts])),
        computed_tokens_per_row=float(np.mean([len(p) - shared for p in prompts]) + shared / len(prompts)
                                      + outcome["answer_tokens_per_row"]),
        peak_rss_mb=_peak_rss_mb(), seconds=time.perf_counter() - started,
        calibration=calibration.summary() if calibration else {"method": "none", "fitted_on": None, "rows": 0},
        calibration_fit=calibration.to_dict() if calibration else {},
        metrics=outcome["metrics"], predictions=outcome["predictions"], label_scores=outcome.get("label_scores"),
        raw_label_scores=outcome.get("raw_label_scores"), budget=budget.to_dict(),
        tips=[t.to_dict() for t in lint(spec, examples=example_sets[0], test_texts=texts, budget=budget)],
        warnings=warnings + _pruning_warnings(outcome.get("labels_scored", 1.0)), spec=spec.to_dict(),
        model=getattr(loaded, "name", ""), base_model=arm.model,
        ms_per_token=ms_per_token(loaded), memory_mb=_weights_mb(loaded) + max(0.0, clock.rss_peak - clock.rss_start))


class _Prompter:
    """Each row's prompt token ids, from that row alone (its examples never depend on the other rows)."""

    def __init__(self, spec: PromptSpec, renderer: Renderer, pool: pd.DataFrame | None, room: int) -> None:
        self.spec, self.renderer, self.pool, self.room = spec, renderer, pool, room

    def prompts(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[Example]]]:
        example_sets = [examples_for(self.pool, ids) for ids in select_examples(self.spec, self.pool, texts)]
        prompts = [self.renderer.prompt_ids(text, examples, max_tokens=self.room)
                   for text, examples in zip(texts, example_sets)]
        return prompts, example_sets


def _fit_calibration(spec: PromptSpec, loaded: Any, renderer: Renderer, prompter: _Prompter,
                     train: pd.DataFrame | None, validation: pd.DataFrame | None,
                     should_stop: Callable[[], bool] | None, pruning: dict | None = None,
                     clock: _Clock | None = None) -> Calibration:
    """The arm's calibration, fitted (and for "auto" chosen) on rows that are never scored.

    When the fitting rows are scored with pruning, ``pruning`` receives ``labels_scored`` (the share of label
    scores computed on them). ``clock`` reports the fitting rows' progress."""
    method = calib.normalise_method(spec.calibration)
    labels = list(spec.labels)
    if method == "none":
        return calib.uncalibrated(labels)
    answers = [renderer.answer_ids(label) for label in labels]
    content_free = None
    if method in ("content-free", "auto"):
        cf_prompts, _ = prompter.prompts([CONTENT_FREE_TEXT])
        content_free = score_labels(loaded, cf_prompts, answers)[0]
        if method == "content-free":
            return calib.content_free(labels, content_free)
    rows, fitted_on = _fitting_rows(train, validation, labels, spec.seed)
    if rows is None:
        if method == "fitted":
            raise SettingsError("A fitted calibration needs labelled rows that are not scored, and there are none.",
                                "Give training or validation rows, or choose 'none' or 'content-free'.")
        return calib.content_free(labels, content_free) if content_free is not None else calib.uncalibrated(labels)
    references = [str(x) for x in rows["label"]]
    prompts, _ = prompter.prompts([str(t) for t in rows["text"]])
    if clock is not None:
        clock.expect_fitting(len(rows), fitted_on)
    offered, note = calib.offered_methods(len(rows), len(labels)) if method == "auto" else (calib.METHODS, None)
    prune = None
    if "fitted" not in offered and len(labels) >= PRUNE_FROM_LABELS:
        # choosing between none and content-free needs only each row's argmax under those two biases
        prune = np.stack([np.zeros(len(labels)), calib.content_free(labels, content_free).log_bias])
    scores = score_labels(loaded, prompts, answers, should_stop=should_stop, prune_bias=prune,
                          stats=pruning if prune is not None and pruning is not None else None,
                          on_batch=clock.fitting_batch if clock is not None else None)
    if method == "fitted":
        return calib.fitted(labels, scores, references, fitted_on)
    name, metric = _choice_metric(references, labels)
    return calib.choose(labels, scores, references, fitted_on=fitted_on, metric=metric, metric_name=name,
                        content_free_scores=content_free, methods=offered, note=note)


def _prune_biases(calibration: Calibration, scored_share: float | None = None) -> np.ndarray | None:
    """The biases to prune with (the calibration's and zeros, for the raw prediction), or None to score every
    label: with fewer than ``PRUNE_FROM_LABELS`` labels the extra pass would not pay, nor when pruning the
    fitting rows computed more than ``PRUNE_PAYS_BELOW`` of their label scores (``scored_share``: a model
    unsure of its answers, where pruning's first passes only add work)."""
    labels = len(calibration.labels)
    if labels < PRUNE_FROM_LABELS or (scored_share is not None and scored_share > PRUNE_PAYS_BELOW):
        return None
    bias = np.asarray(calibration.log_bias or [0.0] * labels, dtype=np.float64)
    return np.unique(np.stack([bias, np.zeros(labels)]), axis=0)


def _pruning_warnings(labels_scored: float) -> list[dict]:
    if labels_scored >= 1.0:
        return []
    return [{"code": "labels_pruned", "message": f"Only the labels that could still win were scored in full "
             f"({labels_scored:.0%} of row × label scores); each row's prediction, raw and calibrated, is the one "
             "scoring every label gives. Labels not scored show probability 0.",
             "numbers": {"labels_scored": round(labels_scored, 4)}}]


def _fitting_rows(train: pd.DataFrame | None, validation: pd.DataFrame | None, labels: Sequence[str],
                  seed: int) -> tuple[pd.DataFrame | None, str | None]:
    """The validation rows (else the training rows) with a known label, at most ``FIT_ROWS_MAX`` (seeded)."""
    for rows, name in ((validation, "validation"), (train, "train")):
        if rows is None or not len(rows):
            continue
        rows = rows[rows["label"].astype(str).isin(set(labels))]
        if len(rows):
            if len(rows) > calib.FIT_ROWS_MAX:
                rows = rows.sample(calib.FIT_ROWS_MAX, random_state=seed)
            return rows.reset_index(drop=True), name
    return None, None


def _choice_metric(references: Sequence[str], labels: Sequence[str]) -> tuple[str, Callable]:
    """Macro-F1 when the answers are unbalanced (the health check's rule), else accuracy."""
    from .metrics import unbalanced

    key = "macro_f1" if unbalanced(references) else "accuracy"
    return key, lambda refs, preds: classification_metrics(refs, preds, labels)[key]


def _classify(spec: PromptSpec, scores: np.ndarray, calibration: Calibration, references: list[str],
              answers: list[list[int]]) -> dict:
    labels = spec.labels
    raw = calib.softmax(scores)
    probs = calibration.apply(scores)
    raw_predictions = [labels[i] for i in raw.argmax(axis=1)]
    predictions = [labels[i] for i in probs.argmax(axis=1)]
    metrics = _classification_report(references, predictions, raw_predictions, labels)
    metrics["calibration"] = calibration.method

    def as_dicts(table: np.ndarray) -> list[dict[str, float]]:
        return [{label: float(p) for label, p in zip(labels, row)} for row in table]

    return {"metrics": metrics, "predictions": predictions, "label_scores": as_dicts(probs),
            "raw_label_scores": as_dicts(raw), "answer_tokens_per_row": answer_trie(answers).fed}


def _one_at_a_time(loaded: Any, prompts: list[list[int]], rows: int, should_stop: Callable[[], bool] | None,
                   **how: Any) -> tuple[list, list[float]]:
    """The first ``rows`` rows answered one query at a time (after the shared prefix's cache, as a deployed
    arm keeps it): their answers, to check against the batch, and each query's milliseconds."""
    rows = range(min(rows, len(prompts)))
    return one_query_at_a_time(loaded, prompts, rows, should_stop=should_stop, **how)


def _agreement_warnings(agreement: float) -> list[dict]:
    if agreement >= 1.0:
        return []
    return [{"code": "single_query_differs", "message": f"Answered one at a time, {1 - agreement:.0%} of the timed "
             "rows got another answer than in the batch (rounding differences on near-ties).",
             "numbers": {"agreement": round(agreement, 4)}}]


_MS_PER_TOKEN: dict[tuple, float] = {}


def ms_per_token(loaded: Any, rows: int = 8, row_tokens: int = 32, prefix_tokens: int = 128) -> float:
    """The model's time per computed token on this machine, measured once per model and dtype in a process.

    A fixed workload (``rows`` rows of ``row_tokens`` after a shared prefix, scored against two one-token
    answers) timed three times, the fastest kept. Arms of one model share it, so their costs differ only
    by the tokens they compute, never by timing noise; an adapter merged into the weights costs the same.
    """
    key = (getattr(loaded, "path", None) or getattr(loaded, "name", ""), str(getattr(loaded, "dtype", "")),
           sum(p.numel() for p in loaded.model.parameters()))
    if key not in _MS_PER_TOKEN:
        vocab = int(loaded.model.config.vocab_size)
        rng = np.random.default_rng(0)
        prefix = rng.integers(100, vocab, prefix_tokens).tolist()
        prompts = [prefix + rng.integers(100, vocab, row_tokens).tolist() for _ in range(rows)]
        answers = [[int(rng.integers(100, vocab))] for _ in range(2)]
        score_labels(loaded, prompts, answers)  # warm up
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            score_labels(loaded, prompts, answers)
            best = min(best, time.perf_counter() - started)
        _MS_PER_TOKEN[key] = best * 1000 / (prefix_tokens + rows * row_tokens)
    return _MS_PER_TOKEN[key]


def _weights_mb(loaded: Any) -> float:
    return sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**20


def _rss_mb() -> float:
    """The process's resident memory now (not its peak), in MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return _peak_rss_mb()


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
    limits = answer_limits(spec, renderer, texts)
    predictions = generate_answers(loaded, prompts, max_new_tokens=limits, stop_ids=renderer.stop_ids(),
                                   stop_at_newline=spec.stop_at_newline, on_batch=clock, should_stop=should_stop)
    return {"metrics": text_metrics(references, predictions), "predictions": predictions, "limits": limits,
            "answer_tokens_per_row": float(np.mean([len(renderer.encode(p)) for p in predictions]))}


def answer_limits(spec: PromptSpec, renderer: Renderer, texts: Sequence[str]) -> list[int]:
    """Each row's longest answer in tokens: at most twice its input plus a little (small models otherwise
    ramble on), and never more than the spec allows."""
    return [min(spec.max_answer_tokens, 2 * len(renderer.encode(t)) + 16) for t in texts]


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
                   calibration_rows: pd.DataFrame | None = None, on_progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict:
    """Rerun the arm with several example draws (seeds): mean, spread and each run.

    Zero-shot, 'similar' and hand-picked prompts do not depend on the seed, so they run once. Only the scores'
    spread is wanted here, so no rows are timed one query at a time.
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
                                        on_progress=progress, should_stop=should_stop, started=time.perf_counter(),
                                        calibration_rows=calibration_rows, latency_rows=0))
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
