"""Prompt versions: kept results, history, two versions side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .run import RESULT_FILE, load_eval_result, save_eval_result
from .stats import compare_pair, primary_metric

# -- prompt versions: kept results, history, two versions side by side -------------------------------------

def keep_prompt_version(store: Any, dataset_id: int | None, spec: Any, result: Any, *, name: str | None = None) -> Any:
    """Save a prompt scored on the full test split as a version and keep its per-row result in its run folder.

    The run then shows up among ``comparable_runs`` (the Compare page) and two versions can be tested
    against each other row by row. Returns the ``PromptVersion``.
    """
    from ..evaluate import save_prompt_version
    from ..jobs import run_folder

    version_id = save_prompt_version(store, dataset_id, spec, result, name=name)
    version = next(v for v in store.list_prompt_versions(dataset_id) if v.id == version_id)
    folder = run_folder(version.run_id)
    save_eval_result(result, folder)
    store.update_run(version.run_id, folder=str(folder))
    return version


def keep_variance(store: Any, run_id: int, spread: dict) -> None:
    """Record ``evaluate_seeds``' spread (mean, std, min, max, per seed) in a run's metrics under 'variance'."""
    run = store.get_run(run_id)
    kept = {k: v for k, v in spread.items() if k != "results"}
    store.update_run(run_id, metrics={**run.metrics, "variance": kept})


def prompt_history(store: Any, dataset_id: int | None, task: str) -> pd.DataFrame:
    """One row per saved prompt version of a dataset, oldest first: scores (0-100), spread, cost per query."""
    metric, second = ("accuracy", "macro_f1") if task == "classification" else ("chrf", "exact_match")
    scale = {"accuracy": 100, "macro_f1": 100, "chrf": 1, "exact_match": 100}
    rows = []
    for v in store.list_prompt_versions(dataset_id):
        run = store.get_run(v.run_id) if v.run_id is not None else None
        timings = run.timings if run else {}
        variance = v.metrics.get("variance") or {}
        rows.append({
            "version": v.id, "name": v.name, "model": (run.settings.get("model") or "") if run else "", "run": v.run_id,
            metric: v.metrics.get(metric, float("nan")) * scale[metric],
            second: v.metrics.get(second, float("nan")) * scale[second],
            "spread": variance.get("std", float("nan")) * scale[metric] if variance else float("nan"),
            "draws": len(variance.get("per_seed", [])),
            "prompt_tokens": timings.get("prompt_tokens_per_row", float("nan")),
            "ms_per_row": timings.get("ms_per_example", float("nan")),
            "kept": bool(run and run.folder and (Path(run.folder) / RESULT_FILE).is_file()),
            "created": pd.to_datetime(v.created, unit="s"),
        })
    columns = ["version", "name", "model", "run", metric, second, "spread", "draws", "prompt_tokens", "ms_per_row", "kept",
               "created"]
    return pd.DataFrame(rows, columns=columns)


def compare_versions(store: Any, a: Any, b: Any, task: str) -> dict:
    """What changed from version ``a`` to ``b`` and whether the score moved beyond luck and example-draw noise.

    Returns ``changes`` (one sentence per changed setting), ``test`` (a ``PairwiseTest`` on the same rows,
    or None when a result was not kept), ``spread`` (the larger seed spread of the two, metric units, or
    None) and ``sentences`` (plain-language verdicts).
    """
    from ..prompting import diff_specs

    runs = [store.get_run(v.run_id) if v.run_id is not None else None for v in (a, b)]
    results = [load_eval_result(r.folder) if r and r.folder else None for r in runs]
    test = None
    if all(results) and results[0].references == results[1].references and results[0].texts == results[1].texts:
        results[0].arm, results[1].arm = a.name, b.name
        test = compare_pair(results[0], results[1], task)
    spreads = [(v.metrics.get("variance") or {}).get("std") for v in (a, b)]
    spreads = [s for s in spreads if s is not None]
    spread = max(spreads) if spreads else None
    metric = primary_metric(task)
    scale = 100 if metric == "accuracy" else 1
    difference = (b.metrics.get(metric, 0.0) - a.metrics.get(metric, 0.0)) * scale
    sentences = [test.sentence()] if test else [
        f"{b.name} scores {difference:+.1f} points against {a.name}; their answers per row were not both kept, so "
        "whether that is luck cannot be tested."]
    if spread is not None:
        noise = spread * scale
        within = abs(difference) <= 2 * noise  # two standard deviations: a rough 95% band
        sentences.append(f"Redrawing the examples moves the score by about ±{noise:.1f} points; the difference of "
                         f"{abs(difference):.1f} points is " + ("within twice that, so it may just be which "
                                                                "examples were drawn." if within else
                                                                "more than twice that."))
    return {"changes": diff_specs(a.spec, b.spec), "test": test, "spread": spread, "difference": difference,
            "sentences": sentences}
