"""Finding, converting and loading models: the tiny test model, refusals, dtype, the bundled model."""

from __future__ import annotations

import json
import time

import pytest

from pvf_core import models
from pvf_core.errors import ModelLoadError


def test_tiny_model_loads_from_its_folder(tiny_model, tiny_model_dir):
    assert tiny_model.path == tiny_model_dir
    assert tiny_model.n_params < 100_000
    assert tiny_model.context_length == 1024
    assert tiny_model.tokenizer.pad_token is not None
    messages = [{"role": "user", "content": "hi"}]
    prompt = tiny_model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    described = tiny_model.describe()
    assert described["parameters"] == tiny_model.n_params and described["context_length"] == 1024
    assert models.load_model(str(tiny_model_dir)) is tiny_model  # shared, loaded once per process
    private = models.load_model(str(tiny_model_dir), fresh=True)
    assert private is not tiny_model and private.model is not tiny_model.model


def test_token_counter_matches_the_tokenizer(tiny_model, tiny_model_dir):
    texts = ["The quick brown fox.", "Привет 你好 🙂 café", "", "refund " * 50]
    expected = [len(ids) for ids in tiny_model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert models.token_counter(str(tiny_model_dir))(texts) == expected
    assert tiny_model.count_tokens(texts) == expected
    assert models.context_length_of(str(tiny_model_dir)) == 1024


def test_context_length_read_from_config_without_torch(tmp_path):
    folder = tmp_path / "gpt2-like"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 1024}))
    assert models.context_length_of(str(folder)) == 1024


def test_a_missing_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        models.resolve(str(missing))
    with pytest.raises(ModelLoadError, match="No model called 'just words'"):
        models.resolve("just words")


def test_pickle_weights_are_refused(tmp_path):
    only_bin = tmp_path / "only-bin"
    only_bin.mkdir()
    (only_bin / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelLoadError, match=r"pickle files \(pytorch_model\.bin\)"):
        models.resolve(str(only_bin))
    (only_bin / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="pickle"):
        models.load_model(str(only_bin))


def test_other_bad_paths_are_refused(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file"):
        models.resolve(str(file))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors weights"):
        models.resolve(str(no_weights))
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="no config.json"):
        models.resolve(str(no_config))


def test_a_hub_id_passes_through_and_fails_plainly_offline(monkeypatch):
    assert models.resolve("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        models.load_model("no-such-org/no-such-model", fresh=True)


def test_best_dtype_honours_pvf_dtype(monkeypatch):
    import torch

    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        monkeypatch.setenv("PVF_DTYPE", name)
        assert models.best_dtype() is dtype
    monkeypatch.setenv("PVF_DTYPE", "int8")
    with pytest.raises(ModelLoadError, match="PVF_DTYPE is 'int8'; it must be one of float32, bfloat16, float16"):
        models.best_dtype()
    monkeypatch.delenv("PVF_DTYPE")
    assert models.best_dtype() in (torch.float32, torch.bfloat16, torch.float16)


def test_dtype_reaches_the_loaded_model(tiny_model_dir, monkeypatch):
    import torch

    monkeypatch.setenv("PVF_DTYPE", "float32")
    assert models.load_model(str(tiny_model_dir), fresh=True).dtype == torch.float32
    assert models.load_model(str(tiny_model_dir), dtype=torch.bfloat16, fresh=True).dtype == torch.bfloat16


def test_model_cache_dir_follows_the_environment(tmp_path, monkeypatch, workspace):
    monkeypatch.setenv("PVF_MODEL_CACHE", str(tmp_path / "cache"))
    assert models.model_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("PVF_MODEL_CACHE")
    assert models.model_cache_dir() == workspace / "models"


@pytest.mark.slow
def test_bundled_model_converts_once_and_is_reused(tmp_path, monkeypatch):
    """An empty model cache: the GGUF converts into a safetensors folder, and the next load reuses it."""
    monkeypatch.setenv("PVF_MODEL_CACHE", str(tmp_path / "models"))
    models.clear_cache()  # the bundled model may already be loaded in this process from the shared cache
    try:
        started = time.perf_counter()
        first = models.load_model("bundled")
        first_seconds = time.perf_counter() - started
        folder = tmp_path / "models" / models.CONVERTED_NAME
        assert first.path == folder
        weights = folder / "model.safetensors"
        assert weights.is_file() and (folder / "tokenizer.json").is_file()
        assert "quantization_config" not in json.loads((folder / "config.json").read_text())
        assert not list((tmp_path / "models").glob("*.partial*"))
        converted_at = weights.stat().st_mtime_ns

        models.clear_cache()
        started = time.perf_counter()
        second = models.load_model("bundled")
        second_seconds = time.perf_counter() - started
        assert second is not first and second.path == folder
        assert weights.stat().st_mtime_ns == converted_at  # not converted again
        assert second_seconds < first_seconds / 2, (first_seconds, second_seconds)

        assert second.n_params == pytest.approx(134.5e6, rel=0.01)
        assert second.context_length == 8192
        assert second.name == models.BUNDLED_LABEL
        assert second.tokenizer.chat_template
        texts = ["This movie was great.", "Привет 你好 🙂"]
        assert models.token_counter("bundled")(texts) == second.count_tokens(texts)
    finally:
        models.clear_cache()  # later tests load the bundled model from the shared cache again


def test_answers_are_computed_in_float32_on_the_cpu_unless_forced(monkeypatch):
    import torch

    monkeypatch.delenv("PVF_DTYPE", raising=False)
    if models.placement()[0] == "cpu":
        assert models.scoring_dtype() is torch.float32  # bf16 rounding would tie a row's answer to its batch
    monkeypatch.setenv("PVF_DTYPE", "bfloat16")
    assert models.scoring_dtype() is torch.bfloat16
