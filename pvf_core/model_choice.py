"""Choosing the model: the bundled one, a hub id (where the hub is reachable) or a local folder.

    hub_status()                 -> (reachable, reason)   a short connection test, cached for a few minutes
    check_model(name)            -> ModelCheck            size, context and the memory it needs, from the
                                                          config alone; whether it fits this machine and why not
Nothing here loads weights: a model is read from its ``config.json`` (``models.model_facts``).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from .errors import ModelLoadError
from .models import BUNDLED, ModelFacts, available_mb, device, model_facts

SUGGESTED_HUB_MODELS = ("HuggingFaceTB/SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct",
                        "Qwen/Qwen2.5-0.5B-Instruct")
HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 1.5
HUB_CHECK_TTL_S = 300.0
# What running a model needs besides its weights: Python, torch and transformers (CPU, measured 500 MB) or
# the CUDA context; while loading, the weights file is also read (memory-mapped) next to the weights.
BASE_MB = {"cpu": 500.0, "cuda": 600.0}

_hub_cache: dict[str, tuple[float, tuple[bool, str]]] = {}


def hub_status(timeout: float = HUB_TIMEOUT_S) -> tuple[bool, str]:
    """Whether the Hugging Face hub can be reached from here, and if not, why (in plain words)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0") or \
            os.environ.get("TRANSFORMERS_OFFLINE", "").strip() not in ("", "0"):
        return False, "Hub models are unavailable: this installation runs offline (HF_HUB_OFFLINE is set)."
    cached = _hub_cache.get(HUB_HOST)
    if cached and time.time() - cached[0] < HUB_CHECK_TTL_S:
        return cached[1]
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            found = (True, "")
    except OSError:
        found = (False, f"Hub models are unavailable: {HUB_HOST} cannot be reached from this machine (no "
                        "internet access). Use the bundled model or a model folder on this machine.")
    _hub_cache[HUB_HOST] = (time.time(), found)
    return found


@dataclass(frozen=True)
class ModelCheck:
    """A model before it is loaded: what it is, what it needs, and whether this machine has it."""

    name: str
    facts: ModelFacts
    device: str
    needed_mb: float                 # to load it and score with it (training needs more: see the estimate)
    available_mb: float
    fits: bool
    reason: str                      # why it does not fit ("" when it does)

    def to_dict(self) -> dict:
        return {"name": self.name, "parameters": self.facts.parameters, "layers": self.facts.layers,
                "context_length": self.facts.context_length, "device": self.device,
                "needed_mb": round(self.needed_mb, 1), "available_mb": round(self.available_mb, 1),
                "fits": self.fits, "reason": self.reason}


def needed_mb(facts: ModelFacts, where: str, dtype_bytes: int = 2) -> float:
    """Memory to load the model and score with it: base + weights (+ the weights file read while loading)."""
    weights = facts.weights_mb(dtype_bytes)
    reading = 0.0 if where == "cuda" else (facts.file_mb or weights)
    return BASE_MB.get(where, BASE_MB["cpu"]) + weights + reading


def check_model(name: str = BUNDLED) -> ModelCheck:
    """Read the model's config (no weights) and say whether it fits the memory free now (GPU memory on a GPU)."""
    from .models import best_dtype

    name = (name or BUNDLED).strip()
    if _is_hub_id(name):
        reachable, reason = hub_status()
        if not reachable:
            raise ModelLoadError(reason)
    facts = model_facts(name)
    where = device()
    dtype_bytes = 4 if str(best_dtype()) == "torch.float32" else 2
    needed = needed_mb(facts, where, dtype_bytes)
    free = available_mb()
    fits = needed < 0.9 * free
    reason = "" if fits else (
        f"It needs about {needed / 1024:.1f} GB to load and run ({facts.parameters / 1e6:,.0f}M parameters), "
        f"but only {free / 1024:.1f} GB {'of GPU memory ' if where == 'cuda' else ''}are free on this machine. "
        "Choose a smaller model or close other programs.")
    return ModelCheck(name=name, facts=facts, device=where, needed_mb=needed, available_mb=free, fits=fits,
                      reason=reason)


def _is_hub_id(name: str) -> bool:
    return name != BUNDLED and not os.path.exists(os.path.expanduser(name)) and name.count("/") == 1 \
        and not name.startswith((".", "/", "~"))
