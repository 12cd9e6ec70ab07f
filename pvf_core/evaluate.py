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

from .errors import ModelLoadError, SettingsError
from .metrics import classification_metrics, collapse, label_shares, text_metrics
from .scoring import (BATCH_TOKENS, GENERATION_BATCH_ROWS, KV_BUDGET_TOKENS, LANE_TOKENS,  # noqa: F401
                      MAX_BATCH_ROWS, Stopped, _batches, _common_prefix_length, _lanes, generate_answers,
                      score_labels)
from .prompting import (CONTENT_FREE_TEXT, Example, PromptSpec, Renderer, examples_for, lint, prompt_budget,
                        select_examples)

__all__ = ["Arm", "EvalResult", "Stopped", "evaluate", "evaluate_seeds", "score_labels", "generate_answers",
           "calibrate", "classification_metrics", "text_metrics", "save_prompt_version", "load_arm_model"]

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
