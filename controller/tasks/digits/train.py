"""Trains the CNN with the generated augmentation and head; saves the weights.

It sees the train split only (read-only, at config["data_dir"]). Progress curves come from
a holdout carved out of train here, in trusted code, with a fixed split: validation and test
labels never reach this container. Metrics reported here are telemetry; the score that
counts is computed by the host from predictions made in a separate evaluation container.
The final epoch's holdout accuracy is the claim the host compares with its own score, since
the weights saved are the final epoch's.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np
import torch
from common import load_generated, mounted, pick_device, write_json
from model import build, to_float
from torch import nn

HOLDOUT_SEED = 0


def holdout_split(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, ...]:
    """A fixed, stratified holdout carved out of train (the same rows for every seed and arm)."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0:
        return x, x[:0], y, y[:0]
    # At least one row per class, so that a low-data train split still holds out every class.
    size = max(round(fraction * len(y)), len(np.unique(y)))
    return tuple(train_test_split(x, y, test_size=size, stratify=y, random_state=HOLDOUT_SEED))


def _choose(setting: Any, auto: bool) -> bool:
    return auto if setting == "auto" else bool(setting)


def run(config: dict[str, Any], reporter: Any) -> None:
    seed = int(config["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    device = pick_device(config)

    train = np.load(f"{mounted(config['data_dir'])}/train.npz")
    x_fit, x_hold, y_fit, y_hold = holdout_split(train["x"], train["y"], float(config.get("holdout_fraction", 0.1)))
    x_train, y_train = to_float(x_fit), torch.from_numpy(y_fit)
    x_hold, y_hold = to_float(x_hold).to(device), torch.from_numpy(y_hold).to(device)

    augment = load_generated("gen/augment.py").augment
    make_head = load_generated("gen/head.py").make_head
    model = build(config, make_head).to(device)
    # bf16 autocast and channels_last pay off for convolution-heavy trunks on GPUs with bf16
    # tensor cores; on the tiny CNN or a CPU they only add casts. "auto" applies that rule,
    # true/false override it.
    heavy = str(config.get("arch", "cnn")) == "resnet18"
    on_gpu = device.type == "cuda"
    channels_last = on_gpu and _choose(config.get("channels_last", "auto"), heavy)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    use_bf16 = on_gpu and _choose(config.get("bf16", "auto"), heavy and torch.cuda.is_bf16_supported())
    lr = float(config["lr"])
    family = str(config.get("optimizer", "adam"))
    if family == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr * 10, momentum=0.9)
    elif family == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batch_size = int(config["batch_size"])
    # At least `min_steps` optimiser steps: a small (low-data) train split gets more epochs, so
    # that every setting trains to a comparable point; the full split is unchanged.
    batches = max(1, math.ceil(len(x_train) / batch_size))
    epochs = max(int(config["epochs"]), math.ceil(int(config.get("min_steps", 0)) / batches))
    schedule = str(config.get("scheduler", "none"))
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        if schedule == "cosine"
        else torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.3)
        if schedule == "step"
        else None
    )
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)

    samples = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            xb = augment(x_train[idx].clone()).to(device)
            yb = y_train[idx].to(device)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss) * len(idx)
            samples += len(idx)
        if scheduler is not None:
            scheduler.step()
        reporter.metric("train_loss", total_loss / len(x_train), epoch)
        if len(x_hold):
            model.eval()
            with torch.no_grad():
                correct = sum(
                    int((model(x_hold[i : i + 1024]).argmax(1) == y_hold[i : i + 1024]).sum())
                    for i in range(0, len(x_hold), 1024)
                )
            reporter.metric("holdout_accuracy", correct / len(x_hold), epoch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    os.makedirs("out", exist_ok=True)
    torch.save(model.state_dict(), "out/model.pt")
    meta = {
        "bf16": use_bf16,
        "channels_last": channels_last,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
        "train_seconds": elapsed,
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else 0,
        "torch": torch.__version__,
    }
    write_json("out/meta.json", meta)
    reporter.metric("samples_per_s", meta["samples_per_s"])
    reporter.metric("peak_gpu_memory_bytes", float(meta["peak_gpu_memory_bytes"]))
    reporter.artifact("out/model.pt", os.path.getsize("out/model.pt"))
    print(json.dumps(meta))
