"""Helpers shared by the task's container-side scripts (trusted task code)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any


def load_generated(path: str) -> ModuleType:
    """Import a generated module from its file."""
    spec = importlib.util.spec_from_file_location(f"gen_{Path(path).stem}", path)
    if spec is None or spec.loader is None:
        msg = f"cannot import {path}"
        raise ImportError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_json(path: str, data: Any) -> None:
    """Write JSON, creating the folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data))


def pick_device(config: dict[str, Any]) -> Any:
    """CUDA when the sandbox granted a GPU, else CPU."""
    import torch

    if config.get("device", "auto") != "cpu" and torch.cuda.is_available():
        # TF32 matmuls and convolutions on cards that have it (Ampere and later): float32 inputs,
        # tensor-core speed, within the noise of seeds for training of this kind.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    return torch.device("cpu")


def mounted(target: str) -> str:
    """Where a data mount's target is for this job: itself under docker, a staged read-only
    copy under the local backend (which exports SANDLAB_MOUNT_PREFIX)."""
    return os.environ.get("SANDLAB_MOUNT_PREFIX", "") + target
