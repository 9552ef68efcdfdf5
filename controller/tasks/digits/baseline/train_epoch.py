"""Baseline training epoch: augment, forward, loss, backward, step; the schedule steps once."""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss_fn: Any,
    augment: Any,
    reporter: Any,
) -> float:
    model.train()
    total, count = 0.0, 0
    for x, y in batches:
        loss = loss_fn(model(augment(x)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss) * len(y)
        count += len(y)
    if scheduler is not None:
        scheduler.step()
    return total / max(count, 1)
