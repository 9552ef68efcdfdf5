"""Smoke checks the guard runs on each slot's entry point, on a tiny input.

Each check raises on a contract violation and returns what it observed (output shape and
dtype); the harness writes that to out/smoke.json and the host compares it with what the
task's shapes require, so the verdict does not rest on the module's process alone.
"""

from __future__ import annotations

import json
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
