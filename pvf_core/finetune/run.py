"""What a training run produced (``TrainResult``) and the run folder it leaves: the peft adapter, ``run.json``,
the model card; zip and merge."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..settings import known_fields
from .settings import LoraSettings

RUN_FILE = "run.json"
CARD_FILE = "README.md"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
RUN_FORMAT = 1


# -- what a training run produced -------------------------------------------------------------------------

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
    world_size: int = 1                # training processes (accelerate launch / torchrun)
    device: str = "cpu"                # where the model trained: cpu, cuda, ...

    def training_summary(self) -> dict:
        keys = ("steps", "total_steps", "best_step", "best_val_loss", "best_val_accuracy", "stopped_early",
                "cancelled", "train_rows", "validation_rows", "train_examples", "train_seconds", "validation_seconds",
                "examples_per_second", "data_tokens", "computed_tokens", "n_params", "n_trainable",
                "peak_rss_mb", "adapter_mb", "dtype", "threads", "world_size", "device")
        return {k: getattr(self, k) for k in keys}


def _round(value: float | None, digits: int = 5) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


# -- the run folder ---------------------------------------------------------------------------------------

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
        from ..prompting import PromptSpec

        return PromptSpec.from_dict(self.prompt)

    def arm(self, name: str | None = None) -> Any:
        """The evaluation harness's Arm for this adapter: same model, same prompt it was trained on."""
        from ..evaluate import Arm

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

    from ..models import check_adapter_folder, load_model

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

