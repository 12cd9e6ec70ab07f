"""The command-line options image runs add to ``inspect``, ``prompt``, ``finetune`` and ``compare`` (click only:
importing this module loads no model code)."""

from __future__ import annotations

from typing import Any, Callable

import click

IMAGE_OPTIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "inspect": [
        ("--images", {"type": click.Path(), "default": None,
                      "help": "Images instead of a CSV: a zip with one folder per label (or a CSV naming each file)."}),
        ("--test-images", {"type": click.Path(), "default": None, "help": "Images: a zip of test images (same layout)."}),
    ],
    "prompt": [
        ("--images", {"type": click.Path(), "default": None,
                      "help": "Images: a zip of training images, one folder per label (instead of --train)."}),
        ("--test-images", {"type": click.Path(), "default": None,
                           "help": "Images: a zip of the test images every arm is scored on (instead of --test)."}),
        ("--describe", {"default": None, "help": "Images: labels in other words for label prompting and CLIP, "
                        "like 'trouser=jean, trousers; bag=purse, handbag'."}),
        ("--clip", {"default": None, "help": "Images: a CLIP hub model (e.g. openai/clip-vit-base-patch32) for "
                    "zero-shot and few-shot prompting; needs the hub."}),
        ("--templates", {"default": None, "help": "Images, CLIP: prompt templates separated by '|' "
                         "(default: 'a photo of a {label}.')."}),
    ],
    "finetune": [
        ("--images", {"type": click.Path(), "default": None,
                      "help": "Images: a zip of training images, one folder per label (instead of --train)."}),
        ("--test-images", {"type": click.Path(), "default": None,
                           "help": "Images: a zip of the test images (instead of --test)."}),
        ("--method", {"type": click.Choice(["head", "lora"]), "default": None,
                      "help": "Images: 'head' (linear head on cached features, the default) or 'lora' (LoRA on the "
                      "backbone's 1x1 convolutions; slow on a CPU)."}),
    ],
    "compare": [
        ("--images", {"type": click.Path(), "default": None,
                      "help": "Images: a zip of training images, one folder per label (instead of --train)."}),
        ("--test-images", {"type": click.Path(), "default": None,
                           "help": "Images: a zip of the test images every arm is scored on (instead of --test)."}),
        ("--describe", {"default": None, "help": "Images: labels in other words for label prompting, like "
                        "'trouser=jean, trousers; bag=purse, handbag'."}),
        ("--clip", {"default": None, "help": "Images: also run CLIP arms from this hub model (--shots sets "
                    "zero-shot and few-shot images per label); needs the hub."}),
        ("--method", {"type": click.Choice(["head", "lora"]), "default": None,
                      "help": "Images: how to fine-tune: 'head' (default) or 'lora'."}),
    ],
}


def image_options(command_name: str) -> Callable[[Callable], Callable]:
    """Decorator adding the image options of ``command_name``."""
    def decorate(command: Callable) -> Callable:
        for flag, kwargs in reversed(IMAGE_OPTIONS[command_name]):
            command = click.option(flag, **kwargs)(command)
        return command
    return decorate


def require_csv_inputs(**paths: str | None) -> None:
    """Without --images, the CSV options are required (click cannot say 'one or the other' itself)."""
    missing = [name for name, value in paths.items() if not value]
    if missing:
        raise click.UsageError(f"Missing option '--{missing[0].replace('_path', '').replace('_', '-')}' "
                               "(or give --images and --test-images).")
