"""Generate docs/cli.md (from the commands' --help) and docs/settings.md (from the settings' field help).

``python -m pvf_core.docs`` rewrites both; a test fails when the committed files are stale, so the help is
written once, next to the code.
"""

from __future__ import annotations

from pathlib import Path

import click

DOCS = Path(__file__).resolve().parent.parent / "docs"


def cli_markdown() -> str:
    from click.testing import CliRunner

    from .cli import cli

    def help_text(*args: str) -> str:
        # A fixed width, so the text does not depend on the terminal that generates it.
        return CliRunner().invoke(cli, [*args, "--help"], prog_name="python -m pvf_core", terminal_width=100).output

    lines = ["# Command line", "", "Generated from `--help` by `python -m pvf_core.docs`; do not edit by hand.", ""]
    lines += ["```text", help_text().rstrip(), "```", ""]
    for name in sorted(cli.commands):
        lines += [f"## `{name}`", "", "```text", help_text(name).rstrip(), "```", ""]
    return "\n".join(lines)


def settings_markdown() -> str:
    from .compare import CostModel, Priorities
    from .finetune import LoraSettings
    from .prompting import PromptSpec
    from .settings import settings_markdown as table

    parts = ["# Settings", "", "Generated from the settings classes by `python -m pvf_core.docs`; the app shows "
             "the same help next to each control.", ""]
    from .images.arms import ImageTrainSettings

    for cls in (PromptSpec, LoraSettings, CostModel, Priorities, ImageTrainSettings):
        parts.append(table(cls))
    return "\n".join(parts)


def write_docs(folder: Path = DOCS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("cli.md", cli_markdown()), ("settings.md", settings_markdown())):
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_docs():
        print(path)
