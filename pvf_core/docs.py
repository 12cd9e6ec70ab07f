"""Generate docs/cli.md (from the commands' --help) and docs/settings.md (from the settings' field help).

``python -m pvf_core.docs`` rewrites both; a test fails when the committed files are stale, so the help is
written once, next to the code.
"""

from __future__ import annotations

from pathlib import Path

import click

DOCS = Path(__file__).resolve().parent.parent / "docs"


def cli_markdown() -> str:
    from .cli import cli

    lines = ["# Command line", "", "Generated from `--help` by `python -m pvf_core.docs`; do not edit by hand.", ""]
    with click.Context(cli, info_name="python -m pvf_core", max_content_width=100) as ctx:
        lines += ["```text", cli.get_help(ctx), "```", ""]
        for name in cli.list_commands(ctx):
            command = cli.get_command(ctx, name)
            with click.Context(command, info_name=f"python -m pvf_core {name}", parent=None,
                               max_content_width=100) as sub:
                lines += [f"## `{name}`", "", "```text", command.get_help(sub), "```", ""]
    return "\n".join(lines)


def settings_markdown() -> str:
    from .compare import CostModel, Priorities
    from .finetune import LoraSettings
    from .prompting import PromptSpec
    from .settings import settings_markdown as table

    parts = ["# Settings", "", "Generated from the settings classes by `python -m pvf_core.docs`; the app shows "
             "the same help next to each control.", ""]
    for cls in (PromptSpec, LoraSettings, CostModel, Priorities):
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
