"""Builds the fixed splits (trusted task code; no generated code runs here).

The dataset arrives read-only at /data/raw (never downloaded here: there is no network).
The outputs are split by who may see them:
  out/public/   train.npz, with labels: all the labelled data training containers get
  out/eval/     val_inputs.npy and test_inputs.npy, no labels: what evaluation gets
  out/private/  labels.json (validation and test labels): only the host keeps it
  out/meta.json input shape, classes, per-channel mean/std, split sizes
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from common import write_json

SPLIT_SEED = 0
SUBSAMPLE_SEED = 0
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2
FAKEDATA_SIZE = 1200
FAKEDATA_SHAPE = (3, 32, 32)
FAKEDATA_CLASSES = 10
DEFAULT_IMAGE_SIZE = 32


def _split(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    return tuple(train_test_split(x, y, test_size=fraction, stratify=y, random_state=SPLIT_SEED))


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[:, None, :, :], digits.target.astype(np.int64)


def _read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (optionally .gz): big-endian header, then uint8 data."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(raw: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's layout: <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    prefix = "train" if train else "t10k"
    folder = raw / "MNIST" / "raw"

    def find(name: str) -> Path:
        plain = folder / name
        return plain if plain.is_file() else folder / f"{name}.gz"

    images = _read_idx(find(f"{prefix}-images-idx3-ubyte"))[:, None, :, :]
    labels = _read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    return np.ascontiguousarray(images), labels


def load_cifar10(raw: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The python pickles: <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}."""
    import pickle

    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for name in names:
        with (raw / "cifar-10-batches-py" / name).open("rb") as fh:
            batch = pickle.load(fh, encoding="latin1")  # noqa: S301 - the user's own dataset files
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch["labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _images_to_arrays(dataset: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for image, label in dataset:
        rgb = image.convert("RGB").resize((size, size))
        xs.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
        ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def load(config: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': ..., 'val': ..., 'test': ...} for the configured dataset."""
    kind = config.get("dataset", "digits")
    raw = config.get("raw_dir", "/data/raw")
    if kind == "digits":
        x, y = load_digits_arrays()
        x_rest, x_test, y_rest, y_test = _split(x, y, TEST_FRACTION)
        x_tr, x_val, y_tr, y_val = _split(x_rest, y_rest, VAL_FRACTION)
        return {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}
    if kind in {"mnist", "cifar10"}:
        reader = load_mnist if kind == "mnist" else load_cifar10
        x, y = reader(Path(raw), train=True)
        test = reader(Path(raw), train=False)
        x_tr, x_val, y_tr, y_val = _split(x, y, VAL_FRACTION)
        return {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": test}
    if kind == "fakedata":
        import torchvision

        fake = torchvision.datasets.FakeData(
            size=FAKEDATA_SIZE, image_size=FAKEDATA_SHAPE, num_classes=FAKEDATA_CLASSES, random_offset=SPLIT_SEED
        )
        x, y = _images_to_arrays(fake, FAKEDATA_SHAPE[-1])
        x_rest, x_test, y_rest, y_test = _split(x, y, TEST_FRACTION)
        x_tr, x_val, y_tr, y_val = _split(x_rest, y_rest, VAL_FRACTION)
        return {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}
    if kind == "imagefolder":
        import torchvision

        size = int(config.get("image_size", DEFAULT_IMAGE_SIZE))
        root = Path(raw)
        given = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
        if "train" in given:  # ISIC-style given splits; carve what is missing, stratified
            splits = {s: _images_to_arrays(torchvision.datasets.ImageFolder(str(p)), size) for s, p in given.items()}
            if "test" not in splits:
                x_tr, x_test, y_tr, y_test = _split(*splits["train"], TEST_FRACTION)
                splits["train"], splits["test"] = (x_tr, y_tr), (x_test, y_test)
            if "val" not in splits:
                x_tr, x_val, y_tr, y_val = _split(*splits["train"], VAL_FRACTION)
                splits["train"], splits["val"] = (x_tr, y_tr), (x_val, y_val)
            return splits
        x, y = _images_to_arrays(torchvision.datasets.ImageFolder(str(root)), size)
        x_rest, x_test, y_rest, y_test = _split(x, y, TEST_FRACTION)
        x_tr, x_val, y_tr, y_val = _split(x_rest, y_rest, VAL_FRACTION)
        return {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}
    msg = f"unknown dataset kind {kind!r}"
    raise ValueError(msg)


def subsample(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, stratified share of train (at least two images per class): the low-data regime."""
    if fraction >= 1:
        return x, y
    from sklearn.model_selection import train_test_split

    classes = len(np.unique(y))
    keep = max(round(fraction * len(y)), 2 * classes)
    if keep >= len(y):
        return x, y
    x_keep, _, y_keep, _ = train_test_split(x, y, train_size=keep, stratify=y, random_state=SUBSAMPLE_SEED)
    return x_keep, y_keep


def main(config: dict[str, Any], reporter: Any) -> None:
    splits = load(config)
    fraction = float(config.get("train_fraction", 1.0))
    splits["train"] = subsample(*splits["train"], fraction)
    x_train, y_train = splits["train"]
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    as_float = x_train.astype(np.float32) / scale
    mean = as_float.mean(axis=(0, 2, 3)).tolist()
    std = (as_float.std(axis=(0, 2, 3)) + 1e-6).tolist()
    classes = sorted(int(c) for c in np.unique(np.concatenate([s[1] for s in splits.values()])))
    os.makedirs("out/public", exist_ok=True)
    os.makedirs("out/eval", exist_ok=True)
    np.savez("out/public/train.npz", x=x_train, y=y_train)
    np.save("out/eval/val_inputs.npy", splits["val"][0])
    np.save("out/eval/test_inputs.npy", splits["test"][0])
    write_json(
        "out/private/labels.json",
        {
            "classes": classes,
            "val": splits["val"][1].tolist(),
            "test": splits["test"][1].tolist(),
        },
    )
    write_json(
        "out/meta.json",
        {
            "dataset": config.get("dataset", "digits"),
            "input_shape": list(x_train.shape[1:]),
            "num_classes": len(classes),
            "mean": mean,
            "std": std,
            "split_seed": SPLIT_SEED,
            "train_fraction": fraction,
            "n_train": len(y_train),
            "n_val": len(splits["val"][1]),
            "n_test": len(splits["test"][1]),
        },
    )
    reporter.metric("n_train", len(y_train))
