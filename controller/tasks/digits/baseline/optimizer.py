"""Baseline optimiser: Adam at the run's lr (hyper "optimizer" picks sgd or adamw instead)."""

from typing import Any

import torch


def make_optimizer(params: Any, hyper: dict[str, Any]) -> torch.optim.Optimizer:
    lr = float(hyper["lr"])
    family = str(hyper.get("optimizer", "adam"))
    if family == "sgd":
        return torch.optim.SGD(params, lr=lr * 10, momentum=0.9)
    if family == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    return torch.optim.Adam(params, lr=lr)
