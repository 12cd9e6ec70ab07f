"""The answer loss, computed on one of two batch layouts: packed (one sequence) or padded (prefix once)."""

from __future__ import annotations

from typing import Any, Sequence


# A batch whose prefix + rows fit this many tokens runs as one packed sequence: one pass instead of a prefix
# pass plus a padded pass. On 500 SST-2 rows that trained at 8.9 examples/s instead of 7.9 (bench_finetune,
# 2 runs each). Its attention is dense over the whole sequence, so its cost grows with the square of the
# length, and the run's peak memory grew by 400 MB at this cap (690 MB at 512): longer batches stay padded.
PACKED_MAX_TOKENS = 384


def answer_loss(model: Any, prefix: Sequence[int], suffixes: list[list[int]], answers: list[list[int]],
                pad_id: int, device: Any = "cpu", packed_max_tokens: int | None = None) -> Any:
    """Mean over rows of the mean negative log-likelihood per answer token: what the harness scores.

    Each row is its prompt tail and its answer without the last token, after the shared prefix; logits are
    computed only at the positions that predict an answer token. Short batches are packed into one
    sequence (``_packed_logits``), longer ones run the prefix once and the rows right-padded after it
    (``_padded_logits``); both compute the same loss. ``packed_max_tokens`` defaults to ``PACKED_MAX_TOKENS``.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = _Synced(model)         # forward through the wrapper (gradient sync), read the config inside
    inputs = [list(s) + list(a[:-1]) for s, a in zip(suffixes, answers)]
    limit = PACKED_MAX_TOKENS if packed_max_tokens is None else packed_max_tokens
    if len(prefix) + sum(len(x) for x in inputs) <= limit:
        logits = _packed_logits(model, list(prefix), suffixes, answers, inputs, device)
    else:
        logits = _padded_logits(model, list(prefix), suffixes, answers, inputs, pad_id, device)
    targets = [t for a in answers for t in a]
    owner = torch.tensor([r for r, a in enumerate(answers) for _ in a], device=device)
    nll = F.cross_entropy(logits.float().reshape(len(targets), -1), torch.tensor(targets, device=device),
                          reduction="none")
    per_row = torch.zeros(len(answers), device=device).index_add_(0, owner, nll)
    per_row = per_row / torch.bincount(owner, minlength=len(answers)).clamp(min=1)
    return per_row.mean()


def _packed_logits(model: Any, prefix: list[int], suffixes: list[list[int]], answers: list[list[int]],
                   inputs: list[list[int]], device: Any) -> Any:
    """One sequence: the prefix, then every row; a row sees the prefix and its own earlier tokens only.

    Positions restart after the prefix for every row, so each row is computed exactly as if it ran alone.
    """
    import torch

    from ..models import attention_mask_for

    start = len(prefix)
    total = start + sum(len(x) for x in inputs)
    positions = torch.arange(total)
    allowed = torch.zeros((total, total), dtype=torch.bool)
    allowed[:start, :start] = True
    keep = torch.zeros(total, dtype=torch.bool)
    offset = start
    for x, s, a in zip(inputs, suffixes, answers):
        rows = slice(offset, offset + len(x))
        positions[rows] = start + torch.arange(len(x))
        allowed[rows, :start] = True
        allowed[rows, rows] = True
        keep[offset + len(s) - 1:offset + len(s) - 1 + len(a)] = True
        offset += len(x)
    allowed &= torch.ones((total, total), dtype=torch.bool).tril()
    ids = torch.tensor([prefix + [t for x in inputs for t in x]])
    out = model(input_ids=ids.to(device), attention_mask=attention_mask_for(model, allowed[None, None]).to(device),
                position_ids=positions[None].to(device), logits_to_keep=keep[None].to(device))
    return out.logits


def _padded_logits(model: Any, prefix: list[int], suffixes: list[list[int]], answers: list[list[int]],
                   inputs: list[list[int]], pad_id: int, device: Any) -> Any:
    """The shared prefix once (with gradients: its keys/values depend on the adapters too), its key/value
    cache expanded over the batch, then the rows right-padded after it."""
    import torch
    from transformers import DynamicCache

    rows, start = len(inputs), len(prefix)
    cache = None
    if start:
        out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
        kv = [(layer[0].expand(rows, -1, -1, -1), layer[1].expand(rows, -1, -1, -1)) for layer in out.cache]
        cache = DynamicCache(ddp_cache_data=kv, config=model.config)
    width = max(len(x) for x in inputs)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    keep = torch.zeros((rows, width), dtype=torch.bool)
    for r, (x, s, a) in enumerate(zip(inputs, suffixes, answers)):
        ids[r, :len(x)] = torch.tensor(x)
        keep[r, len(s) - 1:len(s) - 1 + len(a)] = True   # positions whose next token is an answer token
    lengths = torch.tensor([len(x) for x in inputs])
    mask = torch.ones((rows, start + width), dtype=torch.long)
    mask[:, start:] = torch.arange(width)[None, :] < lengths[:, None]
    positions = (start + torch.arange(width))[None, :].expand(rows, -1)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                cache=cache, use_cache=cache is not None, logits_to_keep=keep.to(device))
    return out.logits



class _Synced:
    """A model wrapped for gradient sync, seen as the model: calls go to the wrapper, attributes to the model."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped.module, name)
