"""Baseline head: a single linear layer."""

from torch import nn


def make_head(in_features: int, num_classes: int) -> nn.Module:
    return nn.Linear(in_features, num_classes)
