"""The digits task's trusted split code (run here on the host: it needs numpy and sklearn only)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

TASK = Path(__file__).resolve().parents[2] / "controller" / "tasks" / "digits"


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(TASK))
    try:
        spec = importlib.util.spec_from_file_location(f"digits_{name}", TASK / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(TASK))


def test_the_low_data_split_is_a_fixed_stratified_share_of_train() -> None:
    prepare = _load("prepare")
    splits = prepare.load({"dataset": "digits"})
    x, y = splits["train"]
    small_x, small_y = prepare.subsample(x, y, 0.1)
    assert len(small_y) == round(0.1 * len(y))
    assert np.bincount(small_y).min() >= 10  # every class, in proportion
    again_x, _ = prepare.subsample(x, y, 0.1)
    assert np.array_equal(small_x, again_x)  # the same rows for every run
    assert prepare.subsample(x, y, 1.0)[0] is x
    _, tiny_y = prepare.subsample(x, y, 0.001)
    assert np.bincount(tiny_y).min() == 2  # never fewer than two per class
    # validation and test do not depend on the fraction
    assert len(splits["val"][1]) == 288 and len(splits["test"][1]) == 360


@pytest.mark.parametrize("rows", [100, 1000])
def test_the_holdout_keeps_every_class(rows: int) -> None:
    pytest.importorskip("sklearn")
    train = _load_train_split()
    y = np.arange(rows) % 10
    x = np.zeros((rows, 1, 8, 8), dtype=np.float32)
    _, _, _, y_hold = train(x, y, 0.1)
    assert set(y_hold.tolist()) == set(range(10))


def _load_train_split():  # type: ignore[no-untyped-def]
    """train.py's holdout_split without importing torch (the host has none)."""
    source = (TASK / "train.py").read_text()
    start = source.index("def holdout_split")
    end = source.index("\ndef ", start + 1)
    namespace: dict[str, object] = {"np": np, "HOLDOUT_SEED": 0}
    exec("from typing import Any\n" + source[start:end], namespace)
    return namespace["holdout_split"]
