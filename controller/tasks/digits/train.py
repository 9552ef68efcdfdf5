"""Trains the generated model with the generated loss, optimiser, schedule, sampler and
training epoch; saves the weights.

This file owns what the generated code must not: the data, the seed, the epochs, the holdout,
the metrics that leave the container and the final save. It sees the train split only
(read-only, at config["data_dir"]). Progress curves come from a holdout carved out of train
here, in trusted code, with a fixed split: validation and test labels never reach this
container. The generated epoch reports through a reporter whose metrics are renamed `gen/...`,
so it cannot speak for the holdout. Metrics reported here are telemetry; the score that
counts is computed by the host from predictions made in a separate evaluation container.
The final epoch's holdout accuracy is the claim the host compares with its own score, since
the weights saved are the final epoch's.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from common import load_generated, mounted, pick_device, write_json
from model import build, to_float

HOLDOUT_SEED = 0
SLOTS = ("augment", "head", "model", "loss", "optimizer", "schedule", "sampler", "train_epoch")


def holdout_split(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, ...]:
    """A fixed, stratified holdout carved out of train (the same rows for every seed and arm)."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0:
        return x, x[:0], y, y[:0]
    # At least one row per class, so that a low-data train split still holds out every class.
    size = max(round(fraction * len(y)), len(np.unique(y)))
    return tuple(train_test_split(x, y, test_size=size, stratify=y, random_state=HOLDOUT_SEED))


def sampled_order(order: Any, labels: torch.Tensor, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """The sampler slot's order for this epoch, checked: a 1-D tensor of row indices in range."""
    rows = order(labels, epoch, generator)
    if not isinstance(rows, torch.Tensor) or rows.dim() != 1 or rows.dtype != torch.int64 or len(rows) == 0:
        msg = f"the sampler must return a non-empty 1-D int64 tensor of row indices, got {rows!r:.80}"
        raise TypeError(msg)
    if int(rows.min()) < 0 or int(rows.max()) >= len(labels):
        msg = f"the sampler returned a row index outside 0..{len(labels) - 1}"
        raise IndexError(msg)
    return rows


class GeneratedReporter:
    """What the generated training epoch may report: its own metrics, under gen/."""

    def __init__(self, reporter: Any) -> None:
        self._reporter = reporter

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self._reporter.metric(f"gen/{name}"[:64], float(value), step)


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
    # The seed reaches the data order here, before any generated module is imported: the rows
    # the sampler's indices point at are shuffled by a generator of this file's own. A module
    # that re-seeds torch (or ignores the sampler's generator) still trains each seed on its own
    # batches, rather than training one model n times and faking a spread of zero.
    rows = np.random.default_rng([seed, 0x5EED]).permutation(len(y_fit))
    x_fit, y_fit = x_fit[rows], y_fit[rows]
    x_train, y_train = to_float(x_fit), torch.from_numpy(y_fit)
    x_hold, y_hold = to_float(x_hold).to(device), torch.from_numpy(y_hold).to(device)

    gen = {slot: load_generated(f"gen/{slot}.py") for slot in SLOTS}
    augment, train_epoch = gen["augment"].augment, gen["train_epoch"].train_epoch
    model = build(config, gen["model"].build_model, gen["head"].make_head).to(device)
    # bf16 autocast and channels_last pay off for convolution-heavy trunks on GPUs with bf16
    # tensor cores; on the tiny CNN or a CPU they only add casts. "auto" applies that rule,
    # true/false override it.
    heavy = str(config.get("arch", "cnn")) == "resnet18"
    on_gpu = device.type == "cuda"
    channels_last = on_gpu and _choose(config.get("channels_last", "auto"), heavy)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    use_bf16 = on_gpu and _choose(config.get("bf16", "auto"), heavy and torch.cuda.is_bf16_supported())
    labels = y_train  # the sampler's view stays on the CPU, with its CPU generator
    if on_gpu:
        # The train split crosses to the GPU once, from pinned memory without blocking; batches are
        # then cut on the device. On a CPU nothing moves (and results stay bit for bit the same).
        x_train = x_train.pin_memory().to(device, non_blocking=True)
        y_train = y_train.pin_memory().to(device, non_blocking=True)
    hyper = {k: v for k, v in config.items() if isinstance(v, int | float | str | bool)}
    optimizer = gen["optimizer"].make_optimizer(model.parameters(), hyper)
    batch_size = int(config["batch_size"])
    # At least `min_steps` optimiser steps: a small (low-data) train split gets more epochs, so
    # that every setting trains to a comparable point; the full split is unchanged.
    batches = max(1, math.ceil(len(x_train) / batch_size))
    epochs = max(int(config["epochs"]), math.ceil(int(config.get("min_steps", 0)) / batches))
    scheduler = gen["schedule"].make_scheduler(optimizer, epochs, hyper)
    generator = torch.Generator().manual_seed(seed)

    def batches_of(order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size].to(x_train.device)
            xb = x_train[idx].to(device)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y_train[idx].to(device)
            counted[0] += len(idx)
            yield xb, yb

    counted, own = [0], GeneratedReporter(reporter)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = sampled_order(gen["sampler"].order, labels, epoch, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            mean_loss = train_epoch(
                model, batches_of(order), optimizer, scheduler, gen["loss"].loss_fn, augment, own
            )
        reporter.metric("train_loss", float(mean_loss), epoch)
        if len(x_hold):
            model.eval()
            with torch.no_grad():
                correct = sum(
                    int((model(x_hold[i : i + 1024]).argmax(1) == y_hold[i : i + 1024]).sum())
                    for i in range(0, len(x_hold), 1024)
                )
            reporter.metric("holdout_accuracy", correct / len(x_hold), epoch)
    samples = counted[0]
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
