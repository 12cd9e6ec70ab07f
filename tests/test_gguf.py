"""The bundled model's tokenizer and context length, read from its GGUF file without converting it."""
import struct

import pytest

from pvf_core import gguf, models
from pvf_core.errors import ModelLoadError

from conftest import DATASETS

SAMPLES = ["This movie was great.", "Привет 你好 🙂", "  two leading spaces\tand a tab\n\nnew lines",
           "<|im_start|>user\nHi<|im_end|>\n", "don't won't I'll 1234567 3.14 e-mail@x.org", ""]


def _dataset_texts(limit_per_file: int = 200) -> list[str]:
    import csv

    texts = []
    for path in sorted(DATASETS.glob("*.csv")):
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            texts += [",".join(row) for _, row in zip(range(limit_per_file), csv.reader(handle))]
    return texts


@pytest.fixture
def empty_model_cache(tmp_path, monkeypatch):
    """No converted model anywhere; the process's loaded models (session fixtures) are put back afterwards."""
    monkeypatch.setenv("PVF_MODEL_CACHE", str(tmp_path / "models"))
    loaded = dict(models._cache)
    models.clear_cache()
    yield tmp_path / "models"
    models.clear_cache()
    models._cache.update(loaded)


def test_metadata_holds_the_vocabulary_and_the_context_length():
    metadata = gguf.read_metadata(models.bundled_gguf_path())
    assert metadata["general.architecture"] == "llama"
    assert len(metadata["tokenizer.ggml.tokens"]) == 49152
    assert gguf.context_length(metadata) == 8192


def test_counts_tokens_exactly_as_the_converted_tokenizer_without_converting(bundled_model, empty_model_cache):
    texts = SAMPLES + _dataset_texts()
    counted = models.token_counter("bundled")(texts)
    assert counted == bundled_model.count_tokens(texts)
    assert models.context_length_of("bundled") == bundled_model.context_length == 8192
    assert not (empty_model_cache / models.CONVERTED_NAME).exists()  # nothing was converted


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"NOPE" + struct.pack("<IQQ", 3, 0, 0))
    with pytest.raises(ValueError, match="not a GGUF file"):
        gguf.read_metadata(fake)


def test_a_broken_bundled_file_is_a_plain_model_error(tmp_path, monkeypatch, empty_model_cache):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 5))  # promises 5 keys and stops
    monkeypatch.setattr(models, "bundled_gguf_path", lambda: broken)
    with pytest.raises(ModelLoadError, match="could not be read"):
        models.context_length_of("bundled")


def test_other_tokenizer_kinds_are_left_to_the_conversion():
    with pytest.raises(ValueError, match="not built here"):
        gguf.byte_level_tokenizer({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})
