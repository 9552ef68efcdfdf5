"""Head: MLP with 128 hidden units and dropout 0.2 (offline template `mlp`)."""

from torch import nn

HIDDEN = 128
DROPOUT = 0.2


def make_head(in_features: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN),
        nn.ReLU(),
        nn.Dropout(DROPOUT),
        nn.Linear(HIDDEN, num_classes),
    )
