"""The schedule of a run: learning rate per step, when to validate, early stopping, CPU threads."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .settings import LoraSettings


# -- the schedule -----------------------------------------------------------------------------------------

def learning_rate_at(step: int, total_steps: int, settings: LoraSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth of the learning rate (nanoGPT's get_lr)."""
    warmup = int(settings.warmup * total_steps)
    peak, floor = settings.learning_rate, settings.learning_rate / 10
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return floor + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (peak - floor)


def eval_interval(settings: LoraSettings, steps_per_epoch: int) -> int:
    return settings.eval_every or max(1, math.ceil(steps_per_epoch / 3))


class _Tracker:
    """Validation history, the best weights so far, early stopping and the overfitting warning."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_loss = math.inf
        self.best_accuracy: float | None = None
        self.best_step = 0
        self.best_weights: dict[str, Any] = {}
        self.checks: list[tuple[int, float, float]] = []   # (step, train loss, validation loss)
        self.warned = False

    def update(self, step: int, train_loss: float | None, val_loss: float, val_accuracy: float | None,
               model: Any) -> bool:
        """Record a check; keep the weights if best. True when this is a new best."""
        self.checks.append((step, train_loss if train_loss is not None else math.nan, val_loss))
        if val_loss < self.best_loss - 1e-4:
            self.best_loss, self.best_accuracy, self.best_step = val_loss, val_accuracy, step
            self.best_weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            return True
        return False

    def should_stop(self) -> bool:
        if not self.patience:
            return False
        since_best = sum(1 for step, _, _ in self.checks if step > self.best_step)
        return since_best >= self.patience

    def overfitting(self) -> dict | None:
        """A warning (once) when validation loss rose for two checks while training loss fell."""
        if self.warned or len(self.checks) < 3:
            return None
        (s0, t0, v0), (_, t1, v1), (s2, t2, v2) = self.checks[-3:]
        if v2 > v1 > v0 and t2 < t1 < t0 and v2 > self.best_loss:
            self.warned = True
            return {"event": "warning", "code": "overfitting",
                    "message": f"The model is starting to memorise the training rows: from step {s0} to {s2} the "
                               f"validation loss rose ({v0:.3f} → {v2:.3f}) while the training loss kept falling "
                               f"({t0:.3f} → {t2:.3f}). The best checkpoint (step {self.best_step}) is kept; "
                               "fewer epochs, a lower learning rate or more rows would help."}
        return None


class ThreadChooser:
    """Picks torch's CPU thread count by timing real training steps, and checks again now and then.

    On a machine where other programs (or the app scoring a prompt) keep the cores busy, every parallel
    operation waits for its descheduled threads: one thread was then 10x faster than two here. On an idle
    machine all cores win. ``PVF_THREADS`` fixes the count instead.
    """

    PROBE_EVERY = 40  # steps between re-checks of the other choice

    def __init__(self, enabled: bool) -> None:
        import torch

        self.torch = torch
        fixed = os.environ.get("PVF_THREADS", "").strip()
        if fixed.isdigit() and int(fixed) > 0:
            torch.set_num_threads(int(fixed))
            enabled = False
        self.most = torch.get_num_threads()
        self.enabled = enabled and self.most > 1
        self.choice = self.most
        self.cost: dict[int, list[float]] = {self.most: [], 1: []}   # seconds per token, recent steps
        self.trying: int | None = None

    def before_step(self, step: int) -> None:
        """Set the thread count for this step: probe both in the first steps, then re-check sometimes."""
        if not self.enabled:
            return
        if step in (1, 2):
            self.trying = 1                      # steps 1-2 run on one thread, 3-4 on all (step 0 warms up)
        elif step in (3, 4):
            self.trying = self.most
        elif step > 4 and step % self.PROBE_EVERY == 0:
            self.trying = 1 if self.choice == self.most else self.most
        else:
            self.trying = None
        self.torch.set_num_threads(self.trying or self.choice)

    def after_step(self, seconds: float, tokens: int) -> None:
        if not self.enabled or self.trying is None:
            if self.enabled:
                self.cost[self.choice] = (self.cost[self.choice] + [seconds / max(tokens, 1)])[-5:]
            return
        self.cost[self.trying] = (self.cost[self.trying] + [seconds / max(tokens, 1)])[-5:]
        if all(self.cost.values()):
            best = min(self.cost, key=lambda n: float(np.median(self.cost[n])))
            self.choice = best

    def use_choice(self) -> None:
        self.torch.set_num_threads(self.choice)

    def restore(self) -> None:
        self.torch.set_num_threads(self.most)

