"""Shared fixtures: an empty workspace per test, a tiny random model, the bundled model, real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Converted models are kept across tests (and across runs) so the bundled model converts once.
os.environ.setdefault("PVF_MODEL_CACHE", str(Path.home() / ".cache" / "pvf-studio-test-models"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty workspace ($PVF_HOME)."""
    home = tmp_path / "pvf-home"
    monkeypatch.setenv("PVF_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised Llama model folder with a byte-level tokenizer (built once per run)."""
    from pvf_core.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from pvf_core.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def bundled_model():
    """The real bundled SmolLM2-135M-Instruct (converted once into $PVF_MODEL_CACHE)."""
    from pvf_core.models import load_model

    return load_model("bundled")


def dataset_path(name: str) -> Path:
    path = DATASETS / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    return path
