"""``python -m pvf_core COMMAND``: the product's jobs, headless.

Every command takes ``--model``, ``--seed`` and ``--json``. With ``--json`` exactly one JSON object goes
to stdout and progress goes to stderr. Exit codes: 0 done, 2 unusable input (one plain line on
stderr), 1 internal error. ``docs/cli.md`` is generated from this file's ``--help`` texts.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import time
from typing import Any, Callable

import click

from .errors import PvfError
from .images.options import image_options, require_csv_inputs

EXIT_UNUSABLE = 2


def common_options(command: Callable) -> Callable:
    """--model, --seed and --json, shared by every command."""
    command = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(command)
    command = click.option("--seed", type=int, default=0, show_default=True,
                           help="Random seed for splits, example draws and training.")(command)
    command = click.option("--model", default="bundled", show_default=True,
                           help="'bundled' (SmolLM2-135M-Instruct, offline), a local model folder, or a hub id.")(command)
    return command


def column_options(command: Callable) -> Callable:
    """The options that name a CSV's columns instead of detecting them."""
    for flag, help_text in reversed([
        ("--text-column", "Column with the text to classify (detected if omitted)."),
        ("--label-column", "Column with the label (detected if omitted)."),
        ("--input-column", "Text-to-text: column with the input (detected if omitted)."),
        ("--output-column", "Text-to-text: column with the expected output (detected if omitted)."),
    ]):
        command = click.option(flag, default=None, help=help_text)(command)
    return command


def search_options(search_help: str) -> Callable[[Callable], Callable]:
    """--search, --budget-seconds and --max-candidates (prompt and compare)."""
    def add(command: Callable) -> Callable:
        command = click.option("--max-candidates", type=int, default=None,
                               help="With --search: try at most N prompts (the same prompts whatever the "
                                    "machine's speed).")(command)
        command = click.option("--budget-seconds", type=float, default=120.0, show_default=True,
                               help="With --search: the time the prompt search may take.")(command)
        return click.option("--search", "search", is_flag=True, help=search_help)(command)
    return add


def search_settings(search: bool, budget_seconds: float, max_candidates: int | None, seed: int) -> Any:
    """The ``SearchSettings`` the search options ask for, or None without --search."""
    if not search:
        return None
    from .search import SearchSettings

    return SearchSettings(budget_seconds=budget_seconds, seed=seed, max_candidates=max_candidates)


def columns_from(options: dict[str, Any]) -> dict[str, Any]:
    """Map the column options onto ``suggest_mapping`` arguments."""
    text = options.get("input_column") or options.get("text_column")
    label = options.get("output_column") or options.get("label_column")
    task = "text-to-text" if (options.get("input_column") or options.get("output_column")) else None
    return {"text_column": text, "label_column": label, "task": task}


def progress(message: str) -> None:
    """Progress and notes go to stderr so stdout stays one JSON object."""
    click.echo(message, err=True)


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in megabytes (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def handle_errors(command: Callable) -> Callable:
    """Turn ``PvfError`` into one plain stderr line and exit code 2; re-raise under tests that ask."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PvfError as error:
            if os.environ.get("PVF_RAISE_ERRORS"):
                raise
            click.echo("Error: " + " ".join(str(error).splitlines()), err=True)  # always one line
            sys.exit(EXIT_UNUSABLE)
    return wrapper


def emit(result: dict[str, Any], as_json: bool, summary: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        click.echo(json.dumps(result, default=_json_default))
    else:
        click.echo(summary(result))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name=None, version="0.1.0", prog_name="pvf_core")
def cli() -> None:
    """PvF Studio: should you prompt a language model or fine-tune it? Measure both on your data."""


@cli.command()
@click.argument("data", type=click.Path(), required=False)
@image_options("inspect")
@column_options
@common_options
@handle_errors
def inspect(data: str | None, images: str | None, test_images: str | None, model: str, seed: int, as_json: bool,
            **columns: Any) -> None:
    """Read DATA.csv (or --images ZIP): columns, detected task, label counts and a health check."""
    if images:
        from .images.commands import inspect_images

        return emit(inspect_images(images, test_images, seed=seed), as_json, _inspect_summary)
    require_csv_inputs(data=data)
    from .data import (SplitSettings, health_check, labeled_frame, make_splits, mapping_notes, read_csv,
                       suggest_mapping, task_reason, worst_first)

    started = time.perf_counter()
    table = read_csv(data)
    mapping = suggest_mapping(table, **columns_from(columns))
    frame = labeled_frame(table, mapping)
    splits = make_splits(frame, mapping.task, SplitSettings(seed=seed))
    count_tokens, context = _tokenizer_for(model)
    warnings = worst_first(table.notes + mapping_notes(table, mapping)
                           + health_check(splits, count_tokens=count_tokens, context_length=context))
    result: dict[str, Any] = {
        "file": data, "rows": len(frame), "columns": table.columns, "task": mapping.task,
        "task_reason": task_reason(table, mapping),
        "text_column": mapping.text_column, "label_column": mapping.label_column,
        "encoding": table.encoding, "delimiter": table.delimiter,
        "dropped_empty_rows": table.dropped_empty_rows, "skipped_bad_rows": table.skipped_bad_rows,
        "split": splits.sizes(),
        "warnings": [{"code": w.code, "message": w.message, "level": w.level, "numbers": w.numbers}
                     for w in warnings],
        "seconds": round(time.perf_counter() - started, 3),
    }
    if mapping.task == "classification":
        result["labels"] = {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()}
    emit(result, as_json, _inspect_summary)


def _tokenizer_for(model: str) -> tuple[Callable[[list[str]], list[int]] | None, int | None]:
    """The model's token counter and context length, without loading its weights."""
    from .models import context_length_of, token_counter

    try:
        return token_counter(model), context_length_of(model)
    except PvfError:
        raise
    except Exception as error:  # noqa: BLE001 - lengths are optional: say so and go on
        progress(f"Note: token lengths not checked ({error}).")
        return None, None


def _inspect_summary(r: dict[str, Any]) -> str:
    lines = [f"{r['file']}: {r['rows']} rows, task {r['task']} "
             f"(text: {r['text_column']!r}, answer: {r['label_column']!r})", f"why {r['task']}: {r['task_reason']}"]
    if "labels" in r:
        lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in r["labels"].items()))
    lines += [f"[{w['level']}] {w['message']}" for w in r["warnings"]]
    return "\n".join(lines)


@cli.command()
@click.option("--train", "train_path", type=click.Path(), help="CSV with the labelled rows examples are drawn from.")
@click.option("--test", "test_path", type=click.Path(), help="CSV with the rows the prompt is scored on.")
@click.option("--shots", type=int, default=0, show_default=True, help="Number of solved examples shown before each row.")
@click.option("--selection", default=None,
              help="How examples are picked: random, balanced (same number per label) or similar (TF-IDF nearest rows). "
                   "Default: similar when there are more labels than examples, else balanced.")
@click.option("--instruction", default="", help="What the model should do, in plain words (default: a generic sentence).")
@click.option("--calibration", default="auto", show_default=True,
              help="Correct a lean towards some labels with one fixed correction per label, fitted on the validation "
                   "rows (never the test rows): fitted, content-free, none, or auto (the best of them on the "
                   "validation rows). 'batch' is read as 'fitted'.")
@click.option("--adapter", "adapter_dir", type=click.Path(file_okay=False), default=None,
              help="Score a saved fine-tuned adapter (a fine-tuning run's folder) with the prompt and calibration "
                   "saved beside it, instead of a prompt.")
@click.option("--limit", type=int, default=None, help="Score only the first N test rows.")
@search_options("Search for a better prompt (instruction, answer words, examples, calibration) on the validation and "
                "training rows, then score the winner once on the test rows.")
@click.option("--predictions", "predictions_path", type=click.Path(dir_okay=False), default=None,
              help="Write one row per test row: text,label,prediction (input,output,prediction for text-to-text).")
@image_options("prompt")
@column_options
@common_options
@handle_errors
def prompt(train_path: str, test_path: str, shots: int, selection: str | None, instruction: str, calibration: str,
           adapter_dir: str | None, limit: int | None, search: bool, budget_seconds: float,
           max_candidates: int | None, predictions_path: str | None, images: str | None,
           test_images: str | None, describe: str | None, clip: str | None, templates: str | None, model: str,
           seed: int, as_json: bool, **columns: Any) -> None:
    """Score a prompt (zero- or few-shot) on the test rows: quality, speed, tokens and tips."""
    if images:
        from .images.commands import prompt_images

        return emit(prompt_images(images, test_images, limit=limit, seed=seed, model=model,
                                  predictions=predictions_path, describe=describe, clip=clip, templates=templates,
                                  shots=shots), as_json, _images_prompt_summary)
    require_csv_inputs(train_path=train_path, test_path=test_path)
    from .data import load_splits
    from .errors import SettingsError
    from .evaluate import Arm, evaluate
    from .models import load_model
    from .prompting import PromptSpec, default_selection

    started = time.perf_counter()
    if limit is not None and limit < 1:
        raise SettingsError(f"--limit must be at least 1; got {limit}.")
    splits, _ = load_splits(train_path, test_path, seed=seed, **columns_from(columns))
    selection = selection or default_selection(shots, len(splits.labels))[0]
    test = splits.test.head(limit) if limit else splits.test
    if adapter_dir:
        arm, saved = _saved_adapter_arm(adapter_dir)
        result = evaluate(arm, test, task=splits.task, labels=arm.prompt.labels or None, train=splits.train,
                          calibration_rows=splits.validation, calibration=saved, on_progress=_stderr_progress())
        model = arm.model
    else:
        spec = PromptSpec(task=splits.task, instruction=instruction, labels=list(splits.labels), shots=shots,
                          selection=selection, calibration=calibration, seed=seed)
        loaded = load_model(model)
        found = None
        if search:
            from .search import search_prompt

            found = search_prompt(loaded, spec, train=splits.train, validation=splits.validation,
                                  settings=search_settings(search, budget_seconds, max_candidates, seed),
                                  on_progress=_stderr_progress())
            spec = found.spec
        result = evaluate(Arm(spec.name(), spec, model=model), test, task=splits.task, labels=spec.labels or None,
                          train=splits.train, calibration_rows=splits.validation, loaded=loaded,
                          on_progress=_stderr_progress())
        if found is not None:
            result.search = found.to_dict()
    if predictions_path:
        result.predictions_frame(scores=False).to_csv(predictions_path, index=False)
    output = {**result.summary(), "seconds": round(time.perf_counter() - started, 3), "peak_rss_mb": peak_rss_mb(),
              "model": result.model, "seed": seed, "predictions": predictions_path, "adapter": adapter_dir}
    if result.search:
        output["search"] = result.search
    if splits.task != "classification":
        from .compare import unchanged_input_metrics

        output["unchanged_input"] = unchanged_input_metrics(result)
    emit(output, as_json, _prompt_summary)


def _saved_adapter_arm(folder: str) -> tuple[Any, Any]:
    """The arm a fine-tuning run folder holds (its model, adapter and prompt) and the calibration saved with it."""
    from .calibration import Calibration
    from .finetune import FinetuneRun

    run = FinetuneRun.load(folder)
    return run.arm(), Calibration.load(folder)


def _images_prompt_summary(r: dict[str, Any]) -> str:
    m = r["metrics"]
    lines = [f"{r['arm']} on {r['n_test']} images: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, "
             f"{r['ms_per_example']:.1f} ms/image, {r['seconds']:.1f} s in all"]
    lines += [f"  {row['label']}: {row['imagenet_classes']}" for row in r.get("mapping", [])]
    lines += [f"[warning] {w['message']}" for w in r["warnings"]]
    return "\n".join(lines)


def _prompt_summary(r: dict[str, Any]) -> str:
    m = r["metrics"]
    if r["task"] == "classification":
        quality = (f"accuracy {m['accuracy']:.3f} (raw scores, before the {r['calibration']['method']} "
                   f"calibration: {m['raw']['accuracy']:.3f}), "
                   f"macro-F1 {m['macro_f1']:.3f}")
    else:
        same = r["unchanged_input"]
        quality = (f"chrF {m['chrf']:.1f}, exact match {m['exact_match']:.3f} (leaving the text unchanged: "
                   f"chrF {same['chrf']:.1f}, exact match {same['exact_match']:.3f})")
    lines = [f"{r['arm']} on {r['n_test']} rows: {quality}",
             f"{r['ms_per_example']:.1f} ms/row batched, {r['latency_ms']['p50']:.0f} ms one query at a time "
             f"(p50 of {r['latency_ms']['rows']}), {r['prompt_tokens_per_row']:.0f} prompt tokens/row, "
             f"peak memory {r['peak_rss_mb']:.0f} MB, {r['seconds']:.1f} s in all"]
    lines += [f"[{t['level']}] {t['message']} {t['why']}" for t in r["tips"]]
    lines += [f"[warning] {w['message']}" for w in r["warnings"]]
    return "\n".join(lines)


@cli.command()
@click.option("--train", "train_path", type=click.Path(), help="CSV with the labelled rows to learn from.")
@click.option("--test", "test_path", type=click.Path(), help="CSV with the held-out rows every arm is scored on.")
@click.option("--validation", type=click.Path(), default=None, help="CSV of validation rows for fine-tuning (default: carved from the training rows).")
@click.option("--shots", default="0,4", show_default=True, help="Prompt arms to run: numbers of examples, comma-separated.")
@click.option("--max-train", type=int, default=None, help="Use only the first N training rows (for prompting examples and fine-tuning).")
@click.option("--limit", type=int, default=None, help="Score only the first N test rows.")
@click.option("--epochs", type=float, default=None, help="Fine-tuning epochs (default: the Balanced preset).")
@click.option("--learning-rate", type=float, default=None, help="Fine-tuning learning rate (default: the Balanced preset).")
@click.option("--rank", type=int, default=None, help="LoRA rank (default: the Balanced preset).")
@click.option("--instruction", default="", help="The instruction every prompt and the fine-tuned model get (default: a generic one).")
@search_options("Add a 'best prompt found' arm: prompts searched on the validation and training rows, the winner "
                "scored on the same test rows as every arm.")
@click.option("--learning-curve/--no-learning-curve", default=False, show_default=True,
              help="Also train and prompt on 16, 64, 256... rows to see where fine-tuning overtakes prompting (slower).")
@click.option("--output", type=click.Path(file_okay=False), default=None, help="Folder for the report, predictions and adapter (default: a new run folder in the workspace).")
@click.option("--predictions", type=click.Path(dir_okay=False), default=None, help="Write one row per test row with a prediction_<arm> column per arm.")
@click.option("--run-id", type=int, default=None, hidden=True, help="Internal: the job this process runs.")
@click.option("--name", "dataset_name", default=None, help="The data's name in the report (default: the train file's name).")
@click.option("--estimate", "estimate_only", is_flag=True,
              help="Only estimate how long the comparison takes here (token counts x the speed measured now).")
@image_options("compare")
@column_options
@common_options
@handle_errors
def compare(train_path: str, test_path: str, validation: str | None, shots: str, max_train: int | None, limit: int | None,
            epochs: float | None, learning_rate: float | None, rank: int | None, instruction: str,
            search: bool, budget_seconds: float, max_candidates: int | None, learning_curve: bool,
            output: str | None, predictions: str | None, run_id: int | None,
            dataset_name: str | None, estimate_only: bool, images: str | None, test_images: str | None,
            describe: str | None, clip: str | None, method: str | None, model: str,
            seed: int, as_json: bool, **columns: Any) -> None:
    """Run zero-shot, k-shot and LoRA arms on the same test rows; recommend one and write a report."""
    if images:
        from .images.commands import compare_images

        compare_images(images, test_images, limit=limit, max_train=max_train, seed=seed, model=model,
                       preset="balanced", epochs=int(epochs) if epochs else None, learning_rate=learning_rate,
                       rank=rank, method=method, output=output, predictions=predictions, run_id=run_id,
                       describe=describe, clip=clip, shots=shots, dataset_name=dataset_name,
                       deliver=lambda result: emit(result, as_json, _compare_summary))
        return
    require_csv_inputs(train_path=train_path, test_path=test_path)
    from .compare import run_comparison
    from .data import load_splits
    from .models import device as model_device
    from .finetune import preset_settings
    from .report import write_report, write_safe_csv
    from .store import workspace_dir

    started = time.perf_counter()
    shot_counts = _parse_shots(shots)
    splits, _ = load_splits(train_path, test_path, seed=seed, max_train=max_train, validation_path=validation,
                            **columns_from(columns))
    overrides = {k: v for k, v in (("epochs", epochs), ("learning_rate", learning_rate), ("rank", rank)) if v is not None}
    lora = preset_settings("balanced", seed=seed, **overrides)
    settings = {"shots": shot_counts, "max_train": max_train, "limit": limit, "learning_curve": learning_curve,
                "model": model, "seed": seed, "lora": lora.to_dict(),
                "search": {"budget_seconds": budget_seconds, "max_candidates": max_candidates} if search else None}
    searching = search_settings(search, budget_seconds, max_candidates, seed)
    from .compare.estimate import StageClock, estimate_own_run, stage_weights

    planning = {"model": model, "shots": shot_counts, "limit": limit, "seed": seed, "lora": lora,
                "instruction": instruction, "learning_curve": learning_curve,
                "search_seconds": budget_seconds if search else 0.0}
    if estimate_only:
        planned = estimate_own_run(splits, started=started, **planning)
        return emit({**planned.to_dict(), "estimate": planned.summary()}, as_json, lambda r: "\n".join(r["messages"]))

    def body(log: Any, folder: str) -> dict[str, Any]:
        planned = estimate_own_run(splits, started=started, **planning)  # kept beside what the run took
        progress(planned.messages[0])
        log.write({"event": "status", "status": "running", "message": f"Estimated: {planned.messages[0]}"})
        report = StageClock(predicted=planned.parts)
        report.on_progress = _stderr_progress(log, time_left=report.time_left)  # time left from the estimate
        comparison = run_comparison(splits, model=model, shots=shot_counts, limit=limit, seed=seed, lora=lora,
                                    learning_curve=learning_curve, output_dir=folder, instruction=instruction,
                                    search=searching,
                                    dataset=dataset_name or os.path.basename(train_path), on_progress=report,
                                    should_stop=log.should_stop, stage_weights=stage_weights(planned.parts))
        report.stop()
        paths = write_report(comparison, folder)
        if predictions:
            write_safe_csv(comparison.predictions_frame(), predictions)
        data = comparison.to_dict()
        return {"task": comparison.task, "n_test": comparison.results[0].n_test, "arms": data["arms"],
                "significance": data["significance"],
                "recommendation": {"arm": comparison.recommendation.arm,
                                   "reasons": comparison.recommendation.reasons,
                                   "what_would_change": comparison.recommendation.what_would_change,
                                   "rule": comparison.recommendation.rule},
                "break_even_queries": comparison.break_even, "learning_curve": comparison.curve,
                "report": paths["html"], "predictions_csv": paths["csv"], "comparison_json": paths["json"],
                "metrics": {a["arm"]: a["metrics"].get(comparison.metric) for a in data["arms"]},
                "seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": peak_rss_mb(),
                "estimate": planned.summary(), "predicted_seconds": planned.seconds,
                "predicted_parts": planned.parts, "actual_parts": report.parts(started),
                "predicted_latency": planned.latency,
                "actual_latency": {r.arm: round(sum(r.latencies_ms or []) / 1000, 2) for r in comparison.results},
                "world_size": int(os.environ.get("WORLD_SIZE", "1")), "device": model_device()} | (
                    {"unchanged_input": data["unchanged_input"]} if "unchanged_input" in data else {})

    default_folder = output or (None if run_id is not None else
                                str(workspace_dir("runs", time.strftime("compare-%Y%m%d-%H%M%S"))))
    _as_job("compare", "standard comparison (command line)", settings, run_id, default_folder, body,
            timing_keys=("seconds", "peak_rss_mb", "predicted_seconds", "predicted_parts", "actual_parts",
                         "predicted_latency", "actual_latency"),
            deliver=lambda done: emit(done, as_json, _compare_summary))


def _parse_shots(text: str) -> list[int]:
    from .errors import SettingsError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SettingsError(f"--shots takes numbers separated by commas, like 0,4; got '{text}'.") from None
    if not values or any(v < 0 for v in values):
        raise SettingsError(f"--shots takes numbers of examples (0 or more), like 0,4; got '{text}'.")
    return values


def _stderr_progress(log: Any = None, time_left: Callable[[], tuple[float, float] | None] | None = None
                     ) -> Callable[[int, int, str], None]:
    """Progress to stderr (each new percent) and, in a job, to its progress log with an ETA: from ``time_left``
    (seconds, pace: the estimate's rest at the pace so far) when it gives one, else from the share done."""
    started, last = time.perf_counter(), {"percent": -1}

    def report(done: int, total: int, message: str) -> None:
        percent = 100 * done / max(total, 1)
        if int(percent) == last["percent"]:
            return
        last["percent"] = int(percent)
        elapsed = time.perf_counter() - started
        eta = elapsed * (100 - percent) / percent if percent > 0 else None
        pace = None
        estimated = time_left() if time_left else None
        if estimated is not None:
            eta, pace = estimated
        progress(f"[{int(percent):3d}%] {message}" + (f" (about {eta:.0f} s left)" if pace is not None else ""))
        if log is not None:
            log.write({"event": "progress", "step": done, "total_steps": total, "percent": round(percent, 1),
                       "eta_seconds": round(eta, 1) if eta is not None else None, "message": message}
                      | ({"pace": round(pace, 2)} if pace is not None else {}))
    return report


def _compare_summary(r: dict[str, Any]) -> str:
    if r.get("status") == "cancelled":
        return f"Run {r.get('run_id')} was cancelled."
    metric = "accuracy" if r["task"] == "classification" else "chrf"
    lines = [f"{a['arm']:<24} {metric} {a['metrics'][metric]:.3f}   {a['ms_per_example']:.0f} ms/row"
             for a in r["arms"]]
    lines += [t["sentence"] for t in r["significance"]]
    lines += [f"Recommendation: {r['recommendation']['arm']}"] + [f"  - {x}" for x in r["recommendation"]["reasons"]]
    lines.append(f"Report: {r['report']}")
    return "\n".join(lines)


@cli.command()
@click.option("--train", "train_path", type=click.Path(), help="CSV with the labelled rows to learn from (10% are held out for validation).")
@click.option("--test", "test_path", type=click.Path(), help="CSV with the held-out rows the fine-tuned model is scored on.")
@click.option("--validation", "validation_path", type=click.Path(), default=None, help="CSV with the validation rows (default: 10% of the training rows).")
@click.option("--max-train", type=int, default=None, help="Use only the first N rows of the training file.")
@click.option("--limit", type=int, default=None, help="Score only the first N test rows.")
@click.option("--preset", type=click.Choice(["quick", "balanced", "thorough"]), default="balanced", show_default=True,
              help="Quick: 1 epoch; Balanced: 2 epochs with early stopping; Thorough: 4 epochs, adapter on every layer.")
@click.option("--epochs", type=float, default=None, help="Passes over the training rows (overrides the preset).")
@click.option("--learning-rate", type=float, default=None, help="Learning rate (overrides the preset).")
@click.option("--rank", type=int, default=None, help="LoRA rank (overrides the preset).")
@click.option("--settings", "settings_path", type=click.Path(dir_okay=False), default=None,
              help="JSON file with every LoRA setting (see docs/settings.md); the options above override it.")
@click.option("--instruction", default="", help="The instruction in the prompt the model is trained and scored with.")
@click.option("--prompt", "prompt_path", type=click.Path(dir_okay=False), default=None,
              help="JSON file with a whole prompt specification (instead of --instruction).")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Folder for the adapter, run.json and model card (default: the run's folder in the workspace).")
@click.option("--predictions", type=click.Path(dir_okay=False), default=None, help="Write text,label,prediction for every test row.")
@click.option("--background", is_flag=True, help="Queue the run as a background job and return at once (see its progress in the app).")
@click.option("--estimate", "estimate_only", is_flag=True, help="Only estimate time and peak memory (runs a short calibration).")
@click.option("--merged", is_flag=True, help="Also fold the adapter into a copy of the base model and save it (safetensors) "
              "in OUTPUT/merged: a standalone model any Hugging Face tool loads, as large as the base model.")
@click.option("--run-id", type=int, default=None, hidden=True, help="Internal: the job this process runs.")
@image_options("finetune")
@column_options
@common_options
@handle_errors
def finetune(train_path: str, test_path: str, validation_path: str | None, max_train: int | None, limit: int | None,
             preset: str, epochs: float | None, learning_rate: float | None, rank: int | None,
             settings_path: str | None, instruction: str, prompt_path: str | None, output: str | None,
             predictions: str | None, background: bool, estimate_only: bool, merged: bool, run_id: int | None,
             images: str | None, test_images: str | None, method: str | None, model: str,
             seed: int, as_json: bool, **columns: Any) -> None:
    """Train a LoRA adapter on the training rows and score it on the test rows with the prompt harness."""
    if images:
        from .images.commands import finetune_images

        finetune_images(images, test_images, limit=limit, max_train=max_train, seed=seed, model=model,
                        preset=preset, epochs=int(epochs) if epochs else None, learning_rate=learning_rate,
                        rank=rank, method=method, output=output, predictions=predictions, run_id=run_id,
                        background=background, deliver=lambda result: emit(result, as_json, _finetune_summary))
        return
    require_csv_inputs(train_path=train_path, test_path=test_path)
    from .data import load_splits
    from .finetune import estimate, is_main_process, train_lora

    started = time.perf_counter()
    splits, _ = load_splits(train_path, test_path, seed=seed, max_train=max_train, validation_path=validation_path,
                            **columns_from(columns))
    if limit:
        splits.test = splits.test.head(limit).reset_index(drop=True)
    settings = _lora_settings(preset, settings_path, seed=seed, epochs=epochs, learning_rate=learning_rate, rank=rank)
    prompt = _prompt_spec(prompt_path, instruction, splits)
    if estimate_only:
        found = estimate(settings, splits, model, prompt=prompt)
        emit({**found.to_dict(), "estimate": found.summary(), "seconds": round(time.perf_counter() - started, 2)},
             as_json,
             lambda r: "\n".join(r["messages"]))
        return
    if background:
        from .jobs import command_line, job_status, start_finetune

        job = start_finetune(splits, settings, model=model, prompt=prompt, name=f"LoRA r={settings.rank}")
        status = job_status(job)
        emit({"run_id": job, "status": status.status, "folder": str(_run_folder(job)),
              "progress_log": str(_run_folder(job) / "progress.jsonl"), "command": command_line(job)}, as_json,
             lambda r: f"Run {r['run_id']} is {r['status']}; progress in {r['progress_log']}")
        return
    if not is_main_process():  # a helper process under `accelerate launch`: train only
        train_lora(settings, splits, model_name=model, prompt=prompt)
        return

    def deliver(result: dict[str, Any]) -> None:
        if merged and result.get("status") == "done":
            from .finetune import merge_run

            progress("Folding the adapter into a copy of the base model...")
            result["merged_dir"] = str(merge_run(result["adapter_dir"]))
        emit(result, as_json, _finetune_summary)

    _finetune_as_job(splits, settings, prompt, model=model, run_id=run_id, output=output, predictions=predictions,
                     started=started, as_json=as_json, deliver=deliver)


def _lora_settings(preset: str, path: str | None, **changes: Any) -> Any:
    from .errors import SettingsError
    from .finetune import LoraSettings, preset_settings

    if not path:
        return preset_settings(preset, **changes)
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as error:
        raise SettingsError(f"The settings file {path} could not be read as JSON ({error}).") from None
    data.update({k: v for k, v in changes.items() if v is not None})
    return LoraSettings.from_dict(data)


def _prompt_spec(path: str | None, instruction: str, splits: Any) -> Any:
    from .errors import SettingsError
    from .finetune import default_prompt
    from .prompting import PromptSpec

    if not path:
        return default_prompt(splits, instruction)
    try:
        spec = PromptSpec.from_dict(json.loads(open(path, encoding="utf-8").read()))
    except (OSError, ValueError) as error:
        raise SettingsError(f"The prompt file {path} could not be read as JSON ({error}).") from None
    return spec.with_(task=splits.task, shots=0, example_ids=[],
                      labels=spec.labels or list(splits.labels))


def _run_folder(run_id: int) -> Any:
    from .jobs import run_folder

    return run_folder(run_id)


def _finetune_as_job(splits: Any, settings: Any, prompt: Any, *, model: str, run_id: int | None,
                     output: str | None, predictions: str | None, started: float, as_json: bool,
                     deliver: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train, score and record the run: in the store, its progress log and its folder (a job or the CLI's own)."""
    def body(log: Any, folder: str) -> dict[str, Any]:
        return _train_and_score(splits, settings, prompt, model=model, folder=folder, log=log,
                                predictions=predictions, started=started, as_json=as_json)

    return _as_job("finetune", f"LoRA r={settings.rank} (command line)", settings.to_dict(), run_id, output, body,
                   timing_keys=("seconds", "train_seconds", "train_examples_per_second", "ms_per_example",
                                "peak_rss_mb", "predicted_seconds", "predicted_peak_mb", "predicted_rough",
                                "predicted_train_seconds", "world_size", "device"), deliver=deliver)


def _as_job(kind: str, name: str, settings: dict, run_id: int | None, output: str | None,
            body: Callable[[Any, str], dict[str, Any]], timing_keys: tuple[str, ...],
            deliver: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run ``body(log, folder)`` recorded like a job: status in the store, events in the run's progress log.

    Started by the app, ``run_id`` names the queued run; from a terminal a run is created, so the app shows it.
    ``deliver(result)`` (print it: a job's stdout is its result file) runs before the final status is set, so
    whoever sees the run finished also finds its result.
    """
    from .evaluate import Stopped
    from .jobs import JobLog, refresh
    from .store import Store

    store = Store()
    if run_id is None:
        run_id = store.add_run(kind, name=name, settings=settings, status="running")
    existing = store.get_run(run_id)
    if existing is None or existing.finished:  # cancelled before this process started
        result = {"run_id": run_id, "status": existing.status if existing else "missing"}
        deliver(result)
        return result
    log = JobLog(run_id, store)
    folder = output or str(_run_folder(run_id))
    store.update_run(run_id, folder=folder)
    log.started()
    try:
        result = body(log, folder)
        result["run_id"] = run_id
        metrics, timings = result.get("metrics", {}), {k: result[k] for k in timing_keys if k in result}
        deliver(result)  # may trim what it prints (the store keeps the metrics read above)
        if result.get("status") == "cancelled":
            log.finished("cancelled", "Cancelled by the user.")
        else:
            log.finished("done", "Finished.", metrics=metrics, timings=timings)
        return result
    except Stopped:
        result = {"run_id": run_id, "status": "cancelled"}
        deliver(result)
        log.finished("cancelled", "Cancelled by the user.")
        return result
    except PvfError as error:
        log.finished("failed", str(error))
        raise
    except MemoryError:
        log.finished("failed", "The job ran out of memory. Lower the batch size or the max length.")
        raise
    except BaseException as error:
        log.finished("failed", _crash_message(error))
        raise
    finally:
        refresh(store)  # start the next queued job, if any


def _crash_message(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "The job was interrupted (Ctrl+C or a stop signal)."
    first = (str(error).strip().splitlines() or [""])[0][:300]
    if "out of memory" in first.lower():
        return "The training ran out of memory. Lower the batch size or the max length."
    return f"The job stopped because of an internal error ({type(error).__name__}: {first}). Details are in job.log."


def _train_and_score(splits: Any, settings: Any, prompt: Any, *, model: str, folder: str, log: Any,
                     predictions: str | None, started: float, as_json: bool) -> dict[str, Any]:
    from .compare import keep_arm_beside_adapter
    from .evaluate import evaluate
    from .finetune import FinetuneRun, train_lora

    def on_progress(event: dict[str, Any]) -> None:
        log.write(event)
        if event.get("event") == "warning":
            progress(f"Warning: {event['message']}")
        elif event.get("event") == "validation":
            progress(event["message"])
        elif event.get("event") == "progress" and (event.get("val_loss") is not None or event["step"] % 20 == 0):
            progress(_progress_line(event))

    predicted = _predicted(settings, splits, model, prompt)
    trained = train_lora(settings, splits, model_name=model, output_dir=folder, on_progress=on_progress,
                         should_stop=log.should_stop, prompt=prompt)
    if trained.cancelled:
        return {"status": "cancelled", "train_seconds": trained.train_seconds}
    run = FinetuneRun.load(folder)
    arm = run.arm()
    _use_threads(trained.threads)  # what the training found fastest on this machine right now
    progress(f"Scoring {len(splits.test)} test rows with the adapter...")
    log.write({"event": "status", "status": "running",
               "message": f"Training finished; scoring {len(splits.test)} test rows with the adapter."})
    scored = evaluate(arm, splits.test, task=splits.task, labels=splits.labels or None, train=splits.train,
                      calibration_rows=splits.validation, on_progress=_eval_progress(), should_stop=log.should_stop)
    run.with_evaluation(scored)
    keep_arm_beside_adapter(scored, folder)
    from .export import export_arm

    export_arm(folder, arm, scored)  # the folder runs without PvF Studio: hub id, prompt files, predict.py
    if predictions:
        scored.predictions_frame(scores=False).to_csv(predictions, index=False)
    return {"arm": scored.arm, "task": scored.task, "n_test": scored.n_test, "metrics": scored.metrics,
            "seconds": round(time.perf_counter() - started, 3), "ms_per_example": round(scored.ms_per_example, 3),
            "peak_rss_mb": peak_rss_mb(), "train_seconds": trained.train_seconds,
            "train_examples_per_second": trained.examples_per_second, "adapter_dir": str(trained.adapter_dir),
            "adapter_mb": trained.adapter_mb, "status": "done", "training": trained.training_summary(),
            "world_size": trained.world_size, "device": trained.device,
            "settings": settings.to_dict(), "warnings": trained.warnings, "calibration": scored.calibration_summary,
            "latency_ms": scored.latency_ms, "computed_tokens_per_row": round(scored.computed_tokens_per_row, 1),
            "memory_mb": round(scored.memory_mb, 1), **predicted}


def _predicted(settings: Any, splits: Any, model: str, prompt: Any) -> dict[str, Any]:
    """The estimate as it stood before the run (a cached calibration, else the speed measured here last, else the
    rough rule), kept in the run's timings beside what the run took, so its details can show predicted against
    actual."""
    from .compare.estimate import training_token_seconds
    from .finetune import estimate

    try:
        found = estimate(settings, splits, model, prompt=prompt, calibrate=False,
                         token_seconds=training_token_seconds(model))
    except PvfError:
        return {}
    return {"predicted_seconds": found.total_seconds, "predicted_peak_mb": found.peak_mb,
            "predicted_rough": found.rough, "predicted_train_seconds": found.train_seconds}


def _use_threads(count: int) -> None:
    if count:
        import torch

        torch.set_num_threads(count)


def _progress_line(event: dict[str, Any]) -> str:
    parts = [f"[{event['percent']:5.1f}%] step {event['step']}/{event['total_steps']}"]
    for key, label in (("train_loss", "loss"), ("val_loss", "val loss"), ("val_accuracy", "val acc"),
                       ("examples_per_second", "ex/s")):
        if event.get(key) is not None:
            parts.append(f"{label} {event[key]:.3f}")
    if event.get("eta_seconds") is not None:
        parts.append(f"ETA {event['eta_seconds']:.0f} s")
    return ", ".join(parts)


def _eval_progress() -> Callable[[int, int, str], None]:
    last = {"percent": -1}

    def report(done: int, total: int, message: str) -> None:
        percent = int(100 * done / max(total, 1)) // 25 * 25
        if percent != last["percent"]:
            last["percent"] = percent
            progress(f"  {message}")
    return report


def _finetune_summary(r: dict[str, Any]) -> str:
    if r.get("status") != "done":
        return f"Run {r.get('run_id')} is {r.get('status')}."
    metric = "accuracy" if r["task"] == "classification" else "chrf"
    return (f"{r['arm']}: {metric} {r['metrics'][metric]:.3f} on {r['n_test']} test rows; trained in "
            f"{r['train_seconds']:.0f} s ({r['train_examples_per_second']:.1f} examples/s); adapter "
            f"{r['adapter_mb']:.1f} MB in {r['adapter_dir']}")


@cli.command()
@click.argument("data", type=click.Path())
@click.option("--prompt-version", type=int, default=None, help="Answer with a saved prompt version (its number in the app).")
@click.option("--adapter", "adapter_dir", type=click.Path(file_okay=False), default=None,
              help="Answer with a fine-tuned model: a fine-tuning run's folder or an exported arm's folder.")
@click.option("--prompt", "prompt_path", type=click.Path(dir_okay=False), default=None,
              help="Answer with a prompt: an export's prompt.json, or a zero-shot prompt specification (JSON).")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write DATA's rows with a prediction column (default: a file in the workspace).")
@click.option("--text-column", default=None, help="Column with the texts to answer (detected if omitted).")
@common_options
@handle_errors
def predict(data: str, prompt_version: int | None, adapter_dir: str | None, prompt_path: str | None,
            output: str | None, text_column: str | None, model: str, seed: int, as_json: bool) -> None:
    """Answer every row of an unlabelled DATA.csv with a saved arm; writes DATA's rows with a prediction column."""
    from .data import read_csv
    from .errors import SettingsError
    from .export import (ArmPackage, export_finetune_run, export_prompt_version, label_frame,
                         package_from_prompt_file, text_column_of)
    from .report import write_safe_csv
    from .store import workspace_dir

    started = time.perf_counter()
    chosen = [x for x in (prompt_version, adapter_dir, prompt_path) if x is not None]
    if len(chosen) != 1:
        raise SettingsError("Give exactly one of --prompt-version N, --adapter DIR or --prompt FILE.")
    table = read_csv(data, min_columns=1)
    if prompt_version is not None:
        package = ArmPackage.load(export_prompt_version(prompt_version))
    elif adapter_dir is not None:
        from pathlib import Path

        folder = Path(adapter_dir)
        package = ArmPackage.load(folder if (folder / "prompt.json").is_file() else export_finetune_run(folder))
    else:
        package = package_from_prompt_file(prompt_path, model=model)
    column = text_column_of(table, text_column, package.prompt.get("text_column"))
    base = None if model == "bundled" else model  # 'bundled' is the default: the export's own base model then
    labelled, answers = label_frame(package, table.frame, column, model=base, on_progress=_stderr_progress())
    target = output or str(workspace_dir("predictions") / f"{os.path.splitext(os.path.basename(data))[0]}-predictions.csv")
    write_safe_csv(labelled, target)
    result = {"n": len(labelled), "predictions_csv": target, "seconds": round(time.perf_counter() - started, 3),
              "text_column": column, "arm": package.scores.get("arm", ""),
              "counts": {str(k): int(v) for k, v in labelled["prediction"].value_counts().items()}}
    emit(result, as_json, lambda r: f"{r['n']} rows answered by {r['arm'] or 'the arm'} in {r['seconds']:.1f} s: "
         f"{r['predictions_csv']}")


def main() -> None:
    cli(prog_name="python -m pvf_core")
