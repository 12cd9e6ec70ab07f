"""The model trained: a private copy of the base model, its attention kernel, and fresh LoRA adapters."""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import SettingsError
from .settings import LoraSettings


def train_dtype() -> Any:
    """bfloat16 base weights where the CPU/GPU computes it natively, else float32 (``PVF_DTYPE`` overrides)."""
    from ..models import best_dtype

    return best_dtype()


# On CPU, plain ("eager") attention trained 1.1-1.4x faster than PyTorch's fused kernel for rows of 30-130
# tokens; it holds the attention weights for backward, so longer rows keep the fused kernel.
EAGER_ATTENTION_MAX_LENGTH = 512


def _set_attention(model: Any, implementation: str) -> None:
    try:
        model.set_attn_implementation(implementation)
    except (AttributeError, ValueError, ImportError):
        pass  # a model that offers only its own attention keeps it


def add_lora(model: Any, settings: LoraSettings) -> Any:
    """Wrap ``model`` with fresh LoRA adapters (float32, whatever the base weights' dtype)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.peft_targets(), task_type="CAUSAL_LM", bias="none")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            return get_peft_model(model, config, autocast_adapter_dtype=True)
    except ValueError as error:
        raise SettingsError(f"LoRA cannot be put on this model's layers '{settings.target_modules}' "
                            f"({str(error).splitlines()[0]}).",
                            "Choose 'attention' or 'all-linear' for Adapted layers.") from error
