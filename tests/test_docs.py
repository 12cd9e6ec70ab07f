"""The generated docs match the code, and every setting explains itself."""

import dataclasses

import pytest

from pvf_core import docs


@pytest.mark.parametrize("name, make", [("cli.md", docs.cli_markdown), ("settings.md", docs.settings_markdown)])
def test_generated_docs_are_up_to_date(name, make):
    committed = (docs.DOCS / name).read_text(encoding="utf-8")
    assert committed == make(), f"docs/{name} is stale: run `.venv/bin/python -m pvf_core.docs`"


def test_every_setting_has_help():
    from pvf_core.compare import CostModel, Priorities
    from pvf_core.finetune import LoraSettings
    from pvf_core.prompting import PromptSpec

    for cls in (PromptSpec, LoraSettings, CostModel, Priorities):
        for field in dataclasses.fields(cls):
            assert len(field.metadata.get("help", "")) > 20, f"{cls.__name__}.{field.name} has no help"
