"""Every tensor the scorer, the generator and the trainer make is made on the model's device.

On a GPU machine a tensor made on the CPU that meets the model's tensors fails with a device mismatch; on a
laptop it silently works. ``DeviceCheck`` makes that bug visible on the CPU alone: a torch function mode
that marks each tensor *our code* (a file under ``pvf_core/``) creates without ``device=`` as stray, follows
the mark through the operations that use it, and records every operation where a stray tensor (not a
scalar) meets a tensor of the model (its weights, buffers, activations: anything not made by our code
without a device). ``.to(device)`` places a tensor; ``.cpu()`` deliberately brings one back to the host.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pandas as pd
import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import ROOT, toy_reviews
from pvf_core.data import Splits

OURS = os.sep + "pvf_core" + os.sep
FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.full, torch.empty, torch.arange,
             torch.from_numpy, torch.randint, torch.rand, torch.randn, torch.eye, torch.linspace}
# what torch itself allows across devices: copying into a tensor, indexing a GPU tensor with CPU indices
NEUTRAL = {"__setitem__", "__getitem__", "copy_", "__get__", "__set__", "numpy", "tolist", "item", "size", "dim",
           "numel",
           "__len__", "__repr__", "__format__", "__bool__", "__index__", "__int__", "__float__", "data_ptr"}
TAG = "_pvf_device_tag"


def _our_caller() -> str | None:
    """'file:line' of the nearest caller outside torch, if it is PvF Studio's own code."""
    frame = sys._getframe(2)
    while frame is not None and (os.sep + "torch" + os.sep) in frame.f_code.co_filename:
        frame = frame.f_back
    if frame is not None and OURS in frame.f_code.co_filename:
        return f"{os.path.relpath(frame.f_code.co_filename, ROOT)}:{frame.f_lineno}"
    return None


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _mark(value: Any, tag: tuple[str, str] | None) -> None:
    for t in _tensors(value):
        try:
            setattr(t, TAG, tag)
        except (AttributeError, RuntimeError):
            pass


def _tag(t: torch.Tensor) -> tuple[str, str] | None:
    return getattr(t, TAG, None)


class DeviceCheck(TorchFunctionMode):
    """Records where a tensor made without ``device=`` by our code meets the model's tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if func in FACTORIES:
            where = _our_caller()
            if where and kwargs.get("device") is None:
                _mark(out, ("stray", where))
            return out
        if name in NEUTRAL:
            return out
        inputs = _tensors(args) + _tensors(kwargs)
        if name == "cpu":
            _mark(out, ("host", ""))
            return out
        targets = (*args[1:], *kwargs.values())
        if name == "to" and any(isinstance(a, (torch.device, str, torch.Tensor)) for a in targets):
            _mark(out, None)  # moved to a device: placed
            return out
        stray = [t for t in inputs if (_tag(t) or ("",))[0] == "stray"]
        model_side = [t for t in inputs if _tag(t) is None]
        big_stray = [t for t in stray if t.dim() > 0]
        if big_stray and model_side:
            self.problems.append(f"{name}: a tensor made at {_tag(big_stray[0])[1]} without device= meets "
                                 "the model's tensors")
        if stray and not model_side:
            _mark(out, _tag(stray[0]))
        elif inputs and all(_tag(t) is not None and _tag(t)[0] == "host" for t in inputs):
            _mark(out, ("host", ""))
        return out


def _checked(run) -> list[str]:
    with DeviceCheck() as check:
        run()
    return sorted(set(check.problems))


def test_the_check_finds_a_stray_tensor(tiny_model_dir):
    """A CPU tensor our code makes without a device and adds to the model's weights is found."""
    from pvf_core.models import load_model

    weight = load_model(str(tiny_model_dir)).model.get_input_embeddings().weight
    stray = compile("torch.ones(weight.shape[1]) + weight[0]", str(ROOT / "pvf_core" / "stray.py"), "eval")
    placed = compile("torch.ones(weight.shape[1], device=weight.device) + weight[0]",
                     str(ROOT / "pvf_core" / "placed.py"), "eval")
    moved = compile("torch.ones(weight.shape[1]).to(weight.device) + weight[0]",
                    str(ROOT / "pvf_core" / "moved.py"), "eval")
    scope = {"torch": torch, "weight": weight}
    with torch.no_grad():
        assert _checked(lambda: eval(stray, scope)) == [
            "add: a tensor made at pvf_core/stray.py:1 without device= meets the model's tensors"]
        assert _checked(lambda: eval(placed, scope)) == []
        assert _checked(lambda: eval(moved, scope)) == []


def _prompts(loaded) -> tuple[list[list[int]], list[list[int]]]:
    from pvf_core.prompting import PromptSpec, Renderer

    renderer = Renderer(PromptSpec(task="classification", labels=["negative", "positive"]), loaded.tokenizer)
    texts = toy_reviews(6, seed=5)["text"]
    return [renderer.prompt_ids(t) for t in texts], [renderer.answer_ids(x) for x in ("negative", "positive")]


def _score(model_dir) -> None:
    from pvf_core.evaluate import score_labels
    from pvf_core.models import load_model

    loaded = load_model(str(model_dir))
    prompts, answers = _prompts(loaded)
    score_labels(loaded, prompts, answers)


def _generate(model_dir) -> None:
    from pvf_core.evaluate import generate_answers
    from pvf_core.models import load_model

    loaded = load_model(str(model_dir))
    prompts, _ = _prompts(loaded)
    generate_answers(loaded, prompts, max_new_tokens=3, stop_ids={loaded.tokenizer.eos_token_id})


def _text_pairs(n: int, seed: int) -> pd.DataFrame:
    frame = toy_reviews(n, seed)
    return pd.DataFrame({"text": frame["text"], "label": frame["text"].str.split().str[-1]})


def _train_and_validate(model_dir, max_length: int) -> None:
    """Training steps and answer-loss validation (text-to-text, so validation does not use the label scorer)."""
    from pvf_core.finetune import LoraSettings, train_lora

    splits = Splits(train=_text_pairs(12, 1), validation=_text_pairs(4, 2), test=_text_pairs(2, 3),
                    task="text-to-text")
    settings = LoraSettings(epochs=1, batch_size=4, eval_every=2, patience=0, dropout=0.0, max_length=max_length)
    train_lora(settings, splits, model_name=str(model_dir))


def _validate_classification(model_dir) -> None:
    """Validation of a classification run: its accuracy comes from the harness's label scorer."""
    from pvf_core.finetune import LoraSettings, train_lora

    splits = Splits(train=toy_reviews(8, 1), validation=toy_reviews(4, 2), test=toy_reviews(2, 3),
                    task="classification")
    train_lora(LoraSettings(epochs=1, batch_size=4, patience=0, dropout=0.0), splits, model_name=str(model_dir))


# The label scorer lives in evaluate.py today; issue 13's branch moves it to pvf_core/scoring.py and makes
# it device-clean. Until that lands these parametrisations are expected to find stray tensors.
SCORER = pytest.mark.xfail(strict=False, reason="the label scorer's tensors are made on the CPU; issue 13's "
                                                "branch (pvf_core/scoring.py) fixes it")


@pytest.mark.parametrize("path", [
    pytest.param("score_labels", marks=SCORER),
    pytest.param("generate_answers", marks=SCORER),
    pytest.param("train_packed"),
    pytest.param("train_padded"),
    pytest.param("validate_classification", marks=SCORER),
])
def test_every_tensor_is_made_on_the_models_device(path, tiny_model_dir, workspace, monkeypatch):
    import pvf_core.finetune as finetune

    runs = {"score_labels": lambda: _score(tiny_model_dir), "generate_answers": lambda: _generate(tiny_model_dir),
            "train_packed": lambda: _train_and_validate(tiny_model_dir, 256),
            "train_padded": lambda: _train_and_validate(tiny_model_dir, 256),
            "validate_classification": lambda: _validate_classification(tiny_model_dir)}
    if path == "train_padded":
        monkeypatch.setattr(finetune, "PACKED_MAX_TOKENS", 0)  # every batch: prefix once, rows padded after it
    assert _checked(runs[path]) == []
