"""Writes predictions for unlabelled inputs; runs in a separate, strict container.

It sees the trained weights, the generated model and head, and the inputs, never the labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from common import load_generated, pick_device, write_json
from model import build, to_float


def run(config: dict[str, Any], reporter: Any) -> None:
    torch.set_num_threads(1)
    device = pick_device(config)
    inputs = to_float(np.load("inputs.npy")).to(device)
    build_model = load_generated("gen/model.py").build_model
    make_head = load_generated("gen/head.py").make_head
    predictions: dict[str, list[int]] = {}
    for name in config["models"]:
        model = build(config, build_model, make_head).to(device)
        state = torch.load(f"models/{name}.pt", map_location=device, weights_only=True)
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            predictions[name] = [
                int(p)
                for i in range(0, len(inputs), 1024)
                for p in model(inputs[i : i + 1024]).argmax(1).cpu().tolist()
            ]
    write_json("out/predictions.json", {"predictions": predictions})
