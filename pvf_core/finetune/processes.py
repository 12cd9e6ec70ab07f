"""One or several training processes: accelerate's Accelerator, sampler sharding, agreement between processes.

Under ``accelerate launch`` (or ``torchrun``) every process runs ``train_lora``. accelerate's own
data-parallel machinery does the rest: ``Accelerator.prepare`` wraps the model for gradient sync (DDP over
NCCL on GPUs, gloo on CPUs), the optimizer, and the data loader, whose batch sampler it shards so that
process *i* reads the *i*-th piece of every global batch. Only the main process logs and saves.

A *global batch* is ``batch_size × processes`` rows, cut by ``length_grouped_batches`` exactly as a single
process cuts its batches, so a 2-process run with batch size 8 sees the same rows per step as a
1-process run with batch size 16, and (the loss being weighted by each piece's share of the rows) learns
the same adapter up to float rounding.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

from .tokens import length_grouped_batches


def _accelerator() -> Any:
    """accelerate's Accelerator: one process here; several under ``accelerate launch``."""
    from accelerate import Accelerator

    return Accelerator(cpu=not _cuda_available())


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def is_main_process() -> bool:
    """False in the helper processes of ``accelerate launch`` (they train, but do not log, save or score)."""
    return os.environ.get("RANK", "0") == "0"


def _all_agree(flag: bool, accelerator: Any) -> bool:
    """True if any process says so (a stop request seen by one process stops all of them together)."""
    if accelerator.num_processes == 1:
        return flag
    import torch

    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), reduction="sum") > 0)


def _summed(values: Sequence[float], accelerator: Any) -> list[float]:
    """``values`` summed over the processes (as they are with one process)."""
    if accelerator.num_processes == 1:
        return [float(v) for v in values]
    import torch

    total = accelerator.reduce(torch.tensor([float(v) for v in values], dtype=torch.float64,
                                            device=accelerator.device), reduction="sum")
    return [float(v) for v in total.tolist()]


class GlobalBatches:
    """The batch sampler of the training data loader: each process's piece of every global batch, in order.

    It yields, for each global batch, its ``world`` pieces one after the other (rows ``i::world`` for piece
    ``i``); accelerate's ``BatchSamplerShard`` hands piece ``i`` to process ``i``. ``set_epoch`` reshuffles.
    A global batch with fewer rows than processes (only possible with tiny data) is left out, since every
    process must take part in every step.
    """

    batch_size = None      # pieces differ in size: accelerate then shards whole pieces, never splits them
    drop_last = False

    def __init__(self, lengths: Sequence[int], rows_per_process: int, world: int, seed: int) -> None:
        self.lengths, self.rows, self.world, self.seed = list(lengths), rows_per_process, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        batches = length_grouped_batches(self.lengths, self.rows * self.world, self.seed + self.epoch)
        return [b for b in batches if len(b) >= self.world]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            for piece in range(self.world):
                yield batch[piece::self.world]

    def __len__(self) -> int:
        return len(self.global_batches()) * self.world


def data_loader(lengths: Sequence[int], rows_per_process: int, world: int, seed: int) -> tuple[Any, GlobalBatches]:
    """A torch DataLoader of row indices over ``GlobalBatches`` (prepare it with the Accelerator)."""
    from torch.utils.data import DataLoader

    sampler = GlobalBatches(lengths, rows_per_process, world, seed)
    return DataLoader(range(len(lengths)), batch_sampler=sampler, collate_fn=list), sampler


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
