"""Smoke checks the guard runs on each slot's entry point, on a tiny input.

Each check raises on a contract violation and returns what it observed (output shape and
dtype); the harness writes that to out/smoke.json and the host compares it with what the
task's shapes require, so the verdict does not rest on the module's process alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The loop stages smoke.json with the dataset's shapes and the batch size.
_SPEC = json.loads(Path("smoke.json").read_text()) if Path("smoke.json").is_file() else {}
BATCH = int(_SPEC.get("batch", 4))
SHAPE = tuple(_SPEC.get("input_shape", (1, 8, 8)))
CLASSES = int(_SPEC.get("num_classes", 10))
HYPER: dict[str, Any] = dict(_SPEC.get("hyper", {"lr": 0.003, "width": 32, "epochs": 12, "batch_size": 64}))


def _observed(out: torch.Tensor) -> dict[str, Any]:
    return {
        "shape": list(out.shape),
        "dtype": str(out.dtype).removeprefix("torch."),
        "finite": bool(torch.isfinite(out).all()),
    }


def check_augment(augment: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    torch.manual_seed(0)
    x = torch.rand(BATCH, *SHAPE)
    y = augment(x.clone())
    if not isinstance(y, torch.Tensor):
        msg = f"augment must return a torch.Tensor, got {type(y).__name__}"
        raise TypeError(msg)
    if y.shape != x.shape:
        msg = f"augment changed the shape: {tuple(x.shape)} -> {tuple(y.shape)}"
        raise ValueError(msg)
    if y.dtype != x.dtype:
        msg = f"augment changed the dtype: {x.dtype} -> {y.dtype}"
        raise TypeError(msg)
    if not torch.isfinite(y).all():
        msg = "augment produced NaN or inf"
        raise ValueError(msg)
    return _observed(y)


def check_head(make_head: Callable[[int, int], nn.Module]) -> dict[str, Any]:
    in_features = 64
    head = make_head(in_features, CLASSES)
    if not isinstance(head, nn.Module):
        msg = f"make_head must return an nn.Module, got {type(head).__name__}"
        raise TypeError(msg)
    out = head(torch.randn(BATCH, in_features))
    if tuple(out.shape) != (BATCH, CLASSES):
        msg = f"head output shape {tuple(out.shape)}, expected {(BATCH, CLASSES)}"
        raise ValueError(msg)
    out.sum().backward()
    return _observed(out)


def _finite_params(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear classifier over flattened inputs, a batch and its labels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(SHAPE), CLASSES))
    return model, torch.rand(BATCH, *SHAPE), torch.arange(BATCH) % CLASSES


def check_model(build_model: Callable[..., nn.Module]) -> dict[str, Any]:
    def make_head(in_features: int, num_classes: int) -> nn.Module:
        return nn.Linear(in_features, num_classes)

    model = build_model(SHAPE, CLASSES, {**HYPER, "make_head": make_head})
    if not isinstance(model, nn.Module):
        msg = f"build_model must return an nn.Module, got {type(model).__name__}"
        raise TypeError(msg)
    out = model(torch.randn(BATCH, *SHAPE))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (BATCH, CLASSES):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        msg = f"model output {shape}, expected logits of shape {(BATCH, CLASSES)}"
        raise ValueError(msg)
    out.sum().backward()
    return _observed(out)


def check_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    torch.manual_seed(0)
    logits = torch.randn(BATCH, CLASSES, requires_grad=True)
    loss = loss_fn(logits, torch.arange(BATCH) % CLASSES)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        msg = f"loss_fn must return a scalar tensor, got {shape}"
        raise ValueError(msg)
    loss.backward()
    if logits.grad is None or not torch.isfinite(logits.grad).all():
        msg = "the loss gives no finite gradient to the logits"
        raise ValueError(msg)
    return _observed(loss)


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, n: int) -> None:
    for _ in range(n):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def check_optimizer(make_optimizer: Callable[..., torch.optim.Optimizer]) -> dict[str, Any]:
    model, x, y = _tiny()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model.parameters(), dict(HYPER))
    if not isinstance(optimizer, torch.optim.Optimizer):
        msg = f"make_optimizer must return a torch.optim.Optimizer, got {type(optimizer).__name__}"
        raise TypeError(msg)
    _steps(model, optimizer, x, y, 3)
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    return {"stepped": changed, "finite": _finite_params(model)}


def check_schedule(make_scheduler: Callable[..., Any]) -> dict[str, Any]:
    model, x, y = _tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = make_scheduler(optimizer, 6, dict(HYPER))
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        msg = f"make_scheduler must return None or an object with step(), got {type(scheduler).__name__}"
        raise TypeError(msg)
    for _ in range(6):
        _steps(model, optimizer, x, y, 1)
        if scheduler is not None:
            scheduler.step()
    rates = [float(group["lr"]) for group in optimizer.param_groups]
    return {"stepped": True, "finite": _finite_params(model) and all(math.isfinite(r) and r >= 0 for r in rates)}


def check_sampler(order: Callable[..., torch.Tensor]) -> dict[str, Any]:
    labels = torch.tensor([i % CLASSES for i in range(3 * CLASSES)] + [0] * CLASSES)  # class 0 over-represented
    rows = order(labels, 0, torch.Generator().manual_seed(0))
    if not isinstance(rows, torch.Tensor) or rows.dim() != 1 or rows.dtype != torch.int64 or len(rows) == 0:
        msg = f"order must return a non-empty 1-D int64 tensor of row indices, got {rows!r:.80}"
        raise TypeError(msg)
    in_range = int(rows.min()) >= 0 and int(rows.max()) < len(labels)
    if not in_range:
        msg = f"order returned a row index outside 0..{len(labels) - 1}"
        raise IndexError(msg)
    return {"dtype": "int64", "in_range": in_range, "nonempty": True}


def check_train_epoch(train_epoch: Callable[..., float]) -> dict[str, Any]:
    model, x, y = _tiny()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    class Reporter:
        def metric(self, name: str, value: float, step: int | None = None) -> None:
            float(value)

    batches = [(x, y), (x.flip(0), y.flip(0))]
    for _epoch in range(2):
        loss = train_epoch(
            model, iter(batches), optimizer, None, nn.functional.cross_entropy, lambda t: t, Reporter()
        )
        if not isinstance(loss, int | float | torch.Tensor) or not math.isfinite(float(loss)):
            msg = f"train_epoch must return the epoch's mean loss as a finite number, got {loss!r:.80}"
            raise ValueError(msg)
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    return {"stepped": changed, "finite": _finite_params(model)}
