"""Baseline schedule: none (hyper "scheduler" picks cosine or step instead)."""

from typing import Any

import torch


def make_scheduler(optimizer: torch.optim.Optimizer, steps: int, hyper: dict[str, Any]) -> Any:
    schedule = str(hyper.get("scheduler", "none"))
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, steps // 3), gamma=0.3)
    return None
