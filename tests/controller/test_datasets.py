"""Dataset adapters: host-side resolution (unit) and in-container preparation (real Docker).

The docker tests write small synthetic datasets in the real on-disk formats (MNIST idx files,
CIFAR-10 python pickles, an image folder of PPM files) and run the real prepare job on them
through a read-only mount.
"""

from __future__ import annotations

import json
import pickle
import random
import struct
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controller.datasets import resolve_dataset
from controller.errors import BadInputError
from controller.plan import Arm, ModuleCode
from controller.registry import RunConfig
from controller.store import RunStore, train_key
from controller.tasks import load_task
from controller.wiring import build_loop


def write_mnist(root: Path, n_train: int = 120, n_test: int = 40) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = random.Random(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = bytes(i % 10 for i in range(n))
        images = bytes(rng.randrange(256) for _ in range(n * 28 * 28))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels)


def write_cifar10(root: Path, per_batch: int = 30) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = random.Random(1)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = bytes(rng.randrange(256) for _ in range(per_batch * 3072))
        batch = {"data": list(data), "labels": [i % 10 for i in range(per_batch)]}
        import numpy as np

        batch["data"] = np.frombuffer(data, dtype=np.uint8).reshape(per_batch, 3072)
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def write_imagefolder(root: Path, classes: int = 3, per_class: int = 20, size: int = 12) -> None:
    rng = random.Random(2)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = bytes(rng.randrange(256) for _ in range(size * size * 3))
            (folder / f"{i}.ppm").write_bytes(f"P6 {size} {size} 255\n".encode() + pixels)


def test_builtin_datasets_need_no_files() -> None:
    assert resolve_dataset("digits", None).kind == "digits"
    assert resolve_dataset("fakedata", None).kind == "fakedata"


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(BadInputError, match="imagefolder:PATH"):
        resolve_dataset("imagenet", None)


def test_missing_dataset_is_one_clear_error_and_nothing_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may be downloaded without --allow-download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(BadInputError) as info:
        resolve_dataset("mnist", tmp_path)
    message = str(info.value)
    assert "MNIST/raw" in message and "--allow-download" in message and "--fallback-fakedata" in message
    fallback = resolve_dataset("cifar10", tmp_path, fallback_fakedata=True)
    assert fallback.kind == "fakedata" and "cifar10" in (fallback.fallback_from or "")


def test_present_datasets_resolve_to_their_folder(tmp_path: Path) -> None:
    write_mnist(tmp_path / "m")
    assert resolve_dataset("mnist", tmp_path / "m").host_path == (tmp_path / "m").resolve()
    write_imagefolder(tmp_path / "isic", per_class=1, size=2)
    assert resolve_dataset(f"imagefolder:{tmp_path / 'isic'}", None).kind == "imagefolder"
    with pytest.raises(BadInputError, match="class subfolders"):
        resolve_dataset(f"imagefolder:{tmp_path / 'nope'}", None)


def _loop(tmp_path: Path, **config: Any) -> Any:
    from sandbox.backends.docker import DockerSandbox

    store, state = RunStore.create(tmp_path / "runs", RunConfig(budget_s=600, seeds=[0, 1], **config), "ds")
    sandbox = DockerSandbox()
    return build_loop(store, state, sandbox, lambda line: None), sandbox


@pytest.mark.docker
@pytest.mark.parametrize(
    ("dataset", "writer", "shape", "classes", "n_test"),
    [
        ("mnist", write_mnist, [1, 28, 28], 10, 40),
        ("cifar10", write_cifar10, [3, 32, 32], 10, 30),
        ("imagefolder", write_imagefolder, [3, 32, 32], 3, 12),
    ],
)
def test_prepare_reads_the_standard_layouts_through_a_read_only_mount(
    tmp_path: Path, dataset: str, writer: Any, shape: list[int], classes: int, n_test: int
) -> None:
    data = tmp_path / "data"
    writer(data)
    name = f"imagefolder:{data}" if dataset == "imagefolder" else dataset
    loop, sandbox = _loop(tmp_path, dataset=name, data_root=str(data))
    try:
        loop.data.prepare()
    finally:
        sandbox.close()
    assert loop.data.meta["input_shape"] == shape and loop.data.meta["num_classes"] == classes
    labels = json.loads((loop.data.dir / "private" / "labels.json").read_text())
    assert len(labels["test"]) == n_test
    assert sorted(p.name for p in (loop.data.dir / "public").iterdir()) == ["train.npz"]  # no labelled val
    prepare = loop.store.attempts()[0]
    assert prepare.result.limits.data_mounts[0].target == "/data/raw"


@pytest.mark.docker
def test_fakedata_trains_a_resnet18_and_the_host_scores_it(tmp_path: Path) -> None:
    loop, sandbox = _loop(tmp_path, dataset="fakedata", arch="resnet18")
    task = load_task("digits")
    try:
        loop.data.prepare()
        arm = Arm(
            name="baseline",
            modules={s: ModuleCode(slot=s, code=task.baseline_code(s), origin="baseline") for s in task.slots},
            hyper={"epochs": 2, "width": 8},
        )
        record = loop.trial.train_and_evaluate(arm, 0)
    finally:
        sandbox.close()
    assert loop.data.meta["input_shape"] == [3, 32, 32]
    assert record is not None and record.host_score is not None and 0.0 <= record.host_score <= 1.0
    train = loop.attempts.index[train_key(arm.key, 0)]
    assert train.result.limits.data_mounts[0].target == "/data/public"  # read-only mount, not copied


@pytest.mark.docker
def test_ablation_dimensions_and_variants_train_for_real(tmp_path: Path) -> None:
    loop, sandbox = _loop(tmp_path)
    task = load_task("digits")
    modules = {s: ModuleCode(slot=s, code=task.baseline_code(s), origin="baseline") for s in task.slots}
    try:
        loop.data.prepare()
        scores = {}
        for hyper in (
            {"optimizer": "sgd", "scheduler": "cosine"},
            {"optimizer": "adamw", "scheduler": "step", "input_size": 16},
        ):
            arm = Arm(name=str(hyper), modules=modules, hyper={"epochs": 3, **hyper})
            record = loop.trial.train_and_evaluate(arm, 0)
            assert record is not None, loop.store.attempts()[-1].result.stderr[-2000:]
            scores[arm.name] = record.host_score
    finally:
        sandbox.close()
    assert all(score is not None and score > 0.5 for score in scores.values()), scores
