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
def tiny32(tiny_model_dir):
    """The tiny model in float32, so different computation orders agree to ~1e-6."""
    import torch

    from pvf_core.models import load_model

    return load_model(str(tiny_model_dir), dtype=torch.float32)


@pytest.fixture(scope="session")
def bundled_model():
    """The real bundled SmolLM2-135M-Instruct (converted once into $PVF_MODEL_CACHE)."""
    from pvf_core.models import load_model

    return load_model("bundled")


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny models run fastest on one thread (and a busy machine cannot stall them)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("PVF_THREADS", "1")
    yield
    torch.set_num_threads(before)


def dataset_path(name: str) -> Path:
    path = DATASETS / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    return path


# -- fine-tuning helpers (tests/test_finetune.py, test_jobs.py, test_cli_finetune.py) -----------------------

@pytest.fixture(scope="session")
def tiny_learner_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with 25x larger input embeddings: its answers move within a few LoRA steps."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-learner")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(25)
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def toy_reviews(n: int, seed: int = 0):
    """n short 'reviews' whose label follows from their words (text, label)."""
    import random

    import pandas as pd

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(["positive", "negative"])
        word = rng.choice(["great", "loved"] if label == "positive" else ["terrible", "boring"])
        rows.append((f"The film {seed}-{i} was {word}, said {rng.choice(['the dog', 'a fox', 'my friend'])}", label))
    return pd.DataFrame(rows, columns=["text", "label"])


@pytest.fixture
def toy_csvs(tmp_path) -> tuple[Path, Path]:
    """A train CSV (120 rows) and a test CSV (30 rows) of toy reviews."""
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    toy_reviews(120, seed=1).to_csv(train, index=False)
    toy_reviews(30, seed=2).to_csv(test, index=False)
    return train, test
