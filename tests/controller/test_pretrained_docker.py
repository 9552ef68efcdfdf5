"""--pretrained loads a resnet18 trunk in the runner image, and refuses a file that would load nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from sandbox.base import Job
from sandbox.policy import load_policy
from sandbox.results import Status

pytestmark = pytest.mark.docker

BASELINE = Path(__file__).resolve().parents[2] / "controller" / "tasks" / "digits" / "baseline" / "model.py"

CHECK = """
import torch, torchvision
from torch import nn
from model import build_model

def head(features, classes):
    return nn.Linear(features, classes)

donor = torchvision.models.resnet18(weights=None)
torch.save(donor.state_dict(), "trunk.pt")
torch.save({"encoder.weight": torch.zeros(3)}, "other.pt")
hyper = {"arch": "resnet18", "make_head": head, "pretrained": "trunk.pt"}
model = build_model((3, 32, 32), 10, hyper)
print("loaded", torch.equal(model[0].layer1[0].conv1.weight, donor.layer1[0].conv1.weight))
try:
    build_model((3, 32, 32), 10, {**hyper, "pretrained": "other.pt"})
except ValueError as exc:
    print("refused", exc)
"""


def test_pretrained_trunk_weights_load_and_a_foreign_file_is_refused(docker_sandbox: Any, tmp_path: Path) -> None:
    shutil.copy(BASELINE, tmp_path / "model.py")
    (tmp_path / "check.py").write_text(CHECK)
    policy = load_policy("default").with_overrides(timeout="120s")
    result = docker_sandbox.run(Job(command=["python3", "check.py"], workspace=tmp_path), policy)
    assert result.status is Status.ok, result.stderr[-2000:]
    assert "loaded True" in result.stdout
    assert "refused pretrained: the file lacks" in result.stdout
