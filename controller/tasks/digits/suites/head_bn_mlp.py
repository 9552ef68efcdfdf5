"""Head: BatchNorm + MLP with 128 hidden units (offline template `bn_mlp`)."""

from torch import nn

HIDDEN = 128


def make_head(in_features: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm1d(in_features),
        nn.Linear(in_features, HIDDEN),
        nn.BatchNorm1d(HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, num_classes),
    )
