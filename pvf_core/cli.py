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
@click.argument("data", type=click.Path())
@column_options
@common_options
@handle_errors
def inspect(data: str, model: str, seed: int, as_json: bool, **columns: Any) -> None:
    """Read DATA.csv: columns, detected task, label counts and a health check."""
    from .data import (SplitSettings, health_check, labeled_frame, make_splits, mapping_notes, read_csv,
                       suggest_mapping, worst_first)

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
             f"(text: {r['text_column']!r}, answer: {r['label_column']!r})"]
    if "labels" in r:
        lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in r["labels"].items()))
    lines += [f"[{w['level']}] {w['message']}" for w in r["warnings"]]
    return "\n".join(lines)


def main() -> None:
    cli(prog_name="python -m pvf_core")
