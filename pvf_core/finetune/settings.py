"""LoRA settings (a dataclass whose fields carry their help and ranges) and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import SettingsError
from ..settings import check_ranges, known_fields, setting


TARGET_CHOICES = ("attention", "all-linear")


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

