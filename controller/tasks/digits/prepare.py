"""Builds the fixed splits (trusted task code; no generated code runs here).

The outputs are split by who may see them:
  out/public/   train.npz and val.npz, with labels: what training containers get
  out/eval/     val_inputs.npy and test_inputs.npy, no labels: what evaluation gets
  out/private/  labels.json: only the host keeps it
"""

from __future__ import annotations

from typing import Any

import numpy as np
from common import write_json

SPLIT_SEED = 0
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2


def main(config: dict[str, Any], reporter: Any) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=VAL_FRACTION, stratify=y_rest, random_state=SPLIT_SEED
    )
    import os

    os.makedirs("out/public", exist_ok=True)
    os.makedirs("out/eval", exist_ok=True)
    np.savez("out/public/train.npz", x=x_train, y=y_train)
    np.savez("out/public/val.npz", x=x_val, y=y_val)
    np.save("out/eval/val_inputs.npy", x_val)
    np.save("out/eval/test_inputs.npy", x_test)
    write_json(
        "out/private/labels.json",
        {
            "classes": sorted(int(c) for c in np.unique(y)),
            "val": y_val.tolist(),
            "test": y_test.tolist(),
        },
    )
    write_json(
        "out/meta.json",
        {
            "dataset": "digits",
            "n_train": len(y_train),
            "n_val": len(y_val),
            "n_test": len(y_test),
            "input_shape": list(x.shape[1:]),
            "num_classes": 10,
            "split_seed": SPLIT_SEED,
        },
    )
    reporter.metric("n_train", len(y_train))
