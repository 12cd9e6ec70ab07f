"""Running comparisons: the standard comparison as a job, and comparisons of runs already in the store."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Sequence

from .comparison import ArmInfo, Comparison, build_comparison
from .costs import CostModel
from .curve import learning_curve_sizes, nested_subsets
from .recommend import Priorities
from .stats import primary_metric

# -- running the standard comparison ------------------------------------------------------------------------

Progress = Callable[[int, int, str], None]


class _Stages:
    """Turns each step's own progress into one overall percentage (steps weighted by expected work)."""

    def __init__(self, weights: dict[str, float], on_progress: Progress | None) -> None:
        self.weights, self.on_progress = weights, on_progress
        self.total = sum(weights.values())
        self.done_before = 0.0

    def step(self, name: str) -> Progress:
        start, weight = self.done_before, self.weights[name]
        self.done_before += weight

        def report(done: int, total: int, message: str) -> None:
            if self.on_progress:
                overall = start + weight * done / max(total, 1)
                self.on_progress(int(overall * 1000 / self.total), 1000, f"{name}: {message}")
        return report


def run_comparison(splits: Any, *, model: str = "bundled", shots: Sequence[int] = (0, 4), max_train: int | None = None,
                   limit: int | None = None, seed: int = 0, lora: Any = None, learning_curve: bool = False,
                   output_dir: str | Path | None = None, cost_model: CostModel | None = None,
                   priorities: Priorities | None = None, dataset: str = "", instruction: str = "",
                   search: Any = None, on_progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   stage_weights: dict[str, float] | None = None) -> Comparison:
    """The standard comparison: k-shot prompts and a LoRA fine-tune, all on the same test rows.

    ``max_train`` and ``limit`` take the first rows of the train and test splits, as given. ``search`` (a
    ``SearchSettings``) adds the "best prompt found" arm: prompts searched on the validation and training
    rows within its budget, the winner scored on the same test rows as every other arm. ``stage_weights``
    (seconds per stage, ``estimate.stage_weights``) weigh the overall progress by the predicted time when they
    cover every stage.
    """
    import time

    from ..evaluate import Arm, evaluate
    from ..finetune import LoraSettings, train_lora
    from ..models import load_model
    from ..prompting import PromptSpec, default_selection
    from ..store import workspace_dir

    started = time.perf_counter()
    test = splits.test.head(limit) if limit else splits.test
    train = splits.train.head(max_train) if max_train else splits.train
    lora = lora or LoraSettings(seed=seed)
    output_dir = Path(output_dir) if output_dir else workspace_dir("runs", f"compare-{int(time.time())}")
    base_spec = PromptSpec(task=splits.task, instruction=instruction, labels=list(splits.labels), seed=seed)
    fitting = splits.validation if splits.validation is not None and len(splits.validation) else None
    # Each arm also scores its fitting rows once (calibration) and times LATENCY_ROWS rows one by one.
    per_arm = len(test) + min(len(fitting) if fitting is not None else len(train), 200) + 30
    weights = {"prompting": float(per_arm * len(shots)), "fine-tuning": float(len(train) * lora.epochs * 1.5),
               "scoring the fine-tuned model": float(per_arm)}
    if search is not None:
        weights["prompt search"] = float(per_arm + search.budget_seconds * 10)
    if learning_curve:
        weights["learning curve"] = float(sum(learning_curve_sizes(len(train))[:-1]) * lora.epochs * 2 * CURVE_SEEDS)
    if stage_weights and all(stage_weights.get(name, 0) > 0 for name in weights):
        weights = {name: float(stage_weights[name]) for name in weights}
    stages = _Stages(weights, on_progress)
    loaded = load_model(model)
    prompting = stages.step("prompting")
    results, infos = [], []
    score = functools.partial(evaluate, task=splits.task, labels=splits.labels or None, train=train,
                              calibration_rows=fitting, should_stop=should_stop)
    for i, k in enumerate(shots):
        spec = base_spec.with_(shots=int(k), selection=default_selection(int(k), len(splits.labels))[0])
        arm = Arm(name=spec.name(), prompt=spec, model=model)
        results.append(score(arm, test, loaded=loaded,
                             on_progress=lambda d, t, m, i=i: prompting(i * t + d, len(shots) * t, m)))
        prompting(i + 1, len(shots), f"{arm.name} done")  # after its calibration and latency rows too
        infos.append(ArmInfo(arm.name, "prompt"))
    if search is not None:
        results.append(_searched_arm(loaded, base_spec, train, fitting, test, search, model, score,
                                     stages.step("prompt search"), should_stop))
        infos.append(ArmInfo(results[-1].arm, "prompt", search=results[-1].search))
    tuned_splits = type(splits)(train=train, validation=splits.validation, test=test, task=splits.task)
    trained = train_lora(lora, tuned_splits, model_name=model, output_dir=output_dir / "adapter",
                         on_progress=_train_progress(stages.step("fine-tuning")), should_stop=should_stop)
    name = f"LoRA r={lora.rank}"
    # scored with the prompt it was trained on (with many labels that one does not list them)
    tuned_arm = Arm(name=name, prompt=trained.prompt.with_(seed=seed), model=model, adapter=str(trained.adapter_dir))
    results.append(score(tuned_arm, test, on_progress=stages.step("scoring the fine-tuned model")))
    keep_arm_beside_adapter(results[-1], trained.adapter_dir)
    infos.append(ArmInfo(name, "finetune", train_seconds=trained.train_seconds, train_rows=len(train),
                         train_peak_rss_mb=trained.peak_rss_mb, adapter_mb=trained.adapter_mb,
                         adapter_dir=str(trained.adapter_dir)))
    curve: list[dict] = []
    if learning_curve:
        prompt_spec = base_spec.with_(shots=max(shots))
        curve = _learning_curve(tuned_splits, prompt_spec, lora, model, loaded, results, infos,
                                stages.step("learning curve"), should_stop, output_dir)
    comparison = build_comparison(results, infos, task=splits.task, labels=splits.labels, dataset=dataset,
                                  cost_model=cost_model, priorities=priorities, curve=curve,
                                  seconds=time.perf_counter() - started, label_counts=dataset_label_counts(splits))
    comparison.save(output_dir)
    return comparison


SEARCHED_ARM = "best prompt found"


def _searched_arm(loaded: Any, start: Any, train: Any, validation: Any, test: Any, settings: Any, model: str,
                  score: Callable, report: Progress, should_stop: Callable[[], bool] | None) -> Any:
    """Search prompts on the validation and training rows, then score the winner on the test rows."""
    from ..evaluate import Arm
    from ..search import search_prompt

    def searching(done: int, total: int, message: str) -> None:
        report(done, total + 1, f"Searching prompts: {message}")

    found = search_prompt(loaded, start, train=train, validation=validation, settings=settings,
                          on_progress=searching, should_stop=should_stop)
    result = score(Arm(name=SEARCHED_ARM, prompt=found.spec, model=model), test, loaded=loaded,
                   on_progress=lambda d, t, m: report(int(settings.budget_seconds), int(settings.budget_seconds) + 1,
                                                      f"Scoring the best prompt found: {m}"))
    result.search = found.to_dict()
    return result


def dataset_label_counts(splits: Any) -> dict[str, int] | None:
    """Rows per label over the whole dataset (what the health check judges balance on); None for text-to-text."""
    import pandas as pd

    if splits.task != "classification":
        return None
    parts = [part for part in (splits.train, splits.validation, splits.test) if part is not None]
    return {str(k): int(v) for k, v in pd.concat(parts)["label"].astype(str).value_counts().items()}


def keep_arm_beside_adapter(result: Any, adapter_dir: str | Path) -> None:
    """Save the calibration a fine-tuned arm was scored with, and its per-row result, next to its adapter.

    Scoring the adapter later (``prompt --adapter``, the Use page, an export) then applies the same
    calibration and gives the same predictions; the run appears among the comparable runs.
    """
    from ..calibration import Calibration

    if result.calibration_fit:
        Calibration.from_dict(result.calibration_fit).save(adapter_dir)
    save_eval_result(result, adapter_dir)


def _train_progress(report: Progress) -> Callable[..., None]:
    """Adapt the trainer's progress records to (done, total, message)."""
    def on_progress(record: dict) -> None:
        if record.get("event", "progress") == "progress" and record.get("total_steps"):
            loss = record.get("train_loss")
            report(int(record["step"]), int(record["total_steps"]),
                   f"step {record['step']}/{record['total_steps']}" + (f", loss {loss:.3f}" if loss else ""))
    return on_progress


CURVE_SEEDS = 2  # runs per size and method on the learning curve (example draws; training seeds)


def _learning_curve(splits: Any, spec: Any, lora: Any, model: str, loaded: Any, results: list, infos: list,
                    report: Progress, should_stop: Callable[[], bool] | None, output_dir: Path) -> list[dict]:
    """Prompting and fine-tuning on nested subsets of the training rows, the same settings at every size.

    The prompt is the comparison's largest-shot arm at every size (its examples drawn from the subset), and
    each size gets ``CURVE_SEEDS`` runs of both methods, so the curve shows their spread; the full-size
    points are the comparison's own two arms. Nothing here is chosen on the test rows.
    """
    from ..evaluate import Arm, evaluate
    from ..finetune import train_lora

    metric = primary_metric(splits.task)
    sizes = learning_curve_sizes(len(splits.train))
    subsets = nested_subsets(splits.train, sizes, task=splits.task, seed=lora.seed)
    prompt_result = next(r for r, i in zip(results, infos) if i.kind == "prompt" and r.spec.get("shots") == spec.shots)
    tuned = next(r for r, i in zip(results, infos) if i.kind == "finetune")
    full = len(splits.train)
    curve = [_curve_point(full, "prompting", spec.seed, prompt_result, metric),
             _curve_point(full, "fine-tuning", lora.seed, tuned, metric)]
    done, total = 0, sum(sizes[:-1])
    for n in sizes[:-1]:
        subset = type(splits)(train=subsets[n], validation=splits.validation, test=splits.test, task=splits.task)
        for seed in range(CURVE_SEEDS):
            arm = Arm(f"{spec.shots}-shot from {n} rows", spec.with_(shots=min(spec.shots, n), seed=seed), model=model)
            r = evaluate(arm, splits.test, task=splits.task, labels=splits.labels or None, train=subsets[n],
                         calibration_rows=splits.validation, loaded=loaded, should_stop=should_stop)
            curve.append(_curve_point(n, "prompting", seed, r, metric))
            trained = train_lora(dataclasses.replace(lora, seed=lora.seed + seed), subset, model_name=model,
                                 output_dir=output_dir / f"curve-{n}-{seed}", should_stop=should_stop)
            arm = Arm(f"LoRA on {n} rows", trained.prompt.with_(seed=seed), model=model, adapter=str(trained.adapter_dir))
            r = evaluate(arm, splits.test, task=splits.task, labels=splits.labels or None, train=subsets[n],
                         calibration_rows=splits.validation, should_stop=should_stop)
            curve.append(_curve_point(n, "fine-tuning", lora.seed + seed, r, metric))
        done += n
        report(done, total, f"{n} rows done")
    return curve


def _curve_point(rows: int, method: str, seed: int, result: Any, metric: str) -> dict:
    scale = 1 if metric == "accuracy" else 100
    point = {"rows": rows, "method": method, "seed": seed, "score": result.metrics[metric] / scale}
    if "macro_f1" in result.metrics:
        point["macro_f1"] = result.metrics["macro_f1"]
    return point


# -- comparisons as jobs, and from runs already in the store ---------------------------------------------

RESULT_FILE = "eval.json"  # an evaluated run's EvalResult, in its run folder


def save_eval_result(result: Any, folder: str | Path) -> Path:
    """Keep a run's per-row result next to it so later comparisons can reuse it without the model."""
    import json

    path = Path(folder) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), default=float), encoding="utf-8")
    return path


def load_eval_result(folder: str | Path) -> Any | None:
    import json

    from ..evaluate import EvalResult

    path = Path(folder) / RESULT_FILE
    if not path.is_file():
        return None
    return EvalResult(**json.loads(path.read_text(encoding="utf-8")))


def comparable_runs(store: Any, dataset_id: int) -> list[Any]:
    """Finished prompt and fine-tuning runs of a dataset whose per-row results were kept."""
    runs = [r for r in store.list_runs(dataset_id=dataset_id, status="done") if r.kind in ("prompt", "finetune")]
    return [r for r in runs if r.folder and (Path(r.folder) / RESULT_FILE).is_file()]


def comparison_from_runs(runs: Sequence[Any], *, task: str, labels: Sequence[str], dataset: str = "",
                         cost_model: CostModel | None = None, priorities: Priorities | None = None,
                         label_counts: dict[str, int] | None = None) -> Comparison:
    """Compare runs already in the store (no model needed); they must have scored the same test rows."""
    from ..errors import DataError

    results, infos = [], []
    for run in runs:
        result = load_eval_result(run.folder)
        result.arm = _unique_name(f"#{run.id} {run.name or result.arm}", [r.arm for r in results])
        results.append(result)
        infos.append(ArmInfo(result.arm, "finetune" if run.kind == "finetune" else "prompt",
                             train_seconds=float(run.timings.get("train_seconds", 0.0)),
                             train_rows=int(run.timings.get("train_rows", 0)),
                             train_peak_rss_mb=float(run.timings.get("train_peak_rss_mb", 0.0)),
                             adapter_mb=float(run.timings.get("adapter_mb", 0.0))))
    first = results[0]
    for r in results[1:]:
        if r.texts != first.texts or r.references != first.references:
            raise DataError(f"'{r.arm}' was scored on other test rows than '{first.arm}', so they cannot be "
                            "compared fairly.", "Run both on the full test split of the same dataset.")
    return build_comparison(results, infos, task=task, labels=labels, dataset=dataset, cost_model=cost_model,
                            priorities=priorities, label_counts=label_counts)


def _unique_name(name: str, taken: Sequence[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} ({n})", n + 1
    return candidate


def start_comparison(dataset: Any, *, model: str = "bundled", shots: Sequence[int] = (0, 4),
                     max_train: int | None = None, limit: int | None = None, learning_curve: bool = False,
                     instruction: str = "", seed: int = 0, epochs: float | None = None, store: Any = None,
                     search_seconds: float | None = None) -> int:
    """Queue the standard comparison of a registered dataset as a background job; its run id.

    ``epochs`` overrides the Balanced preset's passes (the public demo caps them); ``search_seconds`` adds
    the "best prompt found" arm, searched within that many seconds.
    """
    from ..jobs import run_folder, submit, write_splits
    from ..store import Store

    store = store or Store()
    settings = {"shots": list(shots), "max_train": max_train, "limit": limit, "learning_curve": learning_curve,
                "model": model, "seed": seed, "instruction": instruction, "epochs": epochs,
                "search_seconds": search_seconds}
    run_id = store.add_run("compare", dataset_id=dataset.id, name=f"standard comparison of {dataset.name}",
                           settings=settings, status="created")
    folder = run_folder(run_id)
    args = ["compare", *write_splits(dataset.splits, folder / "data"), "--shots", ",".join(map(str, shots)),
            "--model", model, "--seed", str(seed), "--output", str(folder), "--name", dataset.name]
    if max_train:
        args += ["--max-train", str(int(max_train))]
    if limit:
        args += ["--limit", str(int(limit))]
    if learning_curve:
        args.append("--learning-curve")
    if epochs:
        args += ["--epochs", str(float(epochs))]
    if instruction:
        args += ["--instruction", instruction]
    if search_seconds:
        args += ["--search", "--budget-seconds", str(float(search_seconds))]
    return submit(args, kind="compare", run_id=run_id, store=store)
