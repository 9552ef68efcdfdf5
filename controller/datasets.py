"""Datasets behind `--dataset`: where the files are on the host and how they reach a container.

Every adapter is small and needs nothing heavy on the host: the host only checks the
standard file layouts and, with `--allow-download`, fetches the standard archives itself.
Reading the files happens in the (trusted) prepare container, which gets the dataset as a
read-only mount and never has a network. Nothing is ever downloaded inside a sandbox.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from controller.errors import BadInputError

Kind = Literal["digits", "mnist", "cifar10", "imagefolder", "fakedata"]
DOWNLOAD_TIMEOUT_S = 120

MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]


class DatasetSpec(BaseModel):
    """A resolved dataset: what the prepare job reads, and from which host folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """As the user wrote it (`imagefolder:/srv/isic`)."""
    kind: Kind
    host_path: Path | None = None
    """Folder mounted read-only at /data/raw in the prepare container; None for built-ins."""
    fallback_from: str | None = None
    """Set when `--fallback-fakedata` replaced an unavailable dataset."""


def _mnist_present(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / f).is_file() or (raw / f.removesuffix(".gz")).is_file() for f in MNIST_FILES)


def _cifar_present(root: Path) -> bool:
    return all((root / "cifar-10-batches-py" / f).is_file() for f in CIFAR10_FILES)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, md5: str, progress: Callable[[str], None]) -> None:
    progress(f"downloading {url} (on the host)")
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, tmp.open("wb") as out:  # noqa: S310
        shutil.copyfileobj(response, out)
    if _md5(tmp) != md5:
        tmp.unlink()
        msg = f"{url}: checksum mismatch; the download was corrupted or tampered with"
        raise BadInputError(msg)
    tmp.replace(dest)


def download(kind: Kind, root: Path, progress: Callable[[str], None]) -> None:
    """Fetch MNIST or CIFAR-10 into `root` in torchvision's layout, verifying checksums."""
    if kind == "mnist":
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name, md5 in MNIST_FILES.items():
            if not (raw / name).is_file():
                _fetch(MNIST_MIRROR + name, raw / name, md5, progress)
            with gzip.open(raw / name) as src, (raw / name.removesuffix(".gz")).open("wb") as dst:
                shutil.copyfileobj(src, dst)
    elif kind == "cifar10":
        root.mkdir(parents=True, exist_ok=True)
        archive = root / "cifar-10-python.tar.gz"
        if not archive.is_file():
            _fetch(CIFAR10_URL, archive, CIFAR10_MD5, progress)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")


DATASET_NAMES = "digits, mnist, cifar10, imagefolder:PATH or fakedata"


def check_dataset_name(name: str) -> None:
    """Refuse a name no dataset answers to, without looking for its files (planning needs none)."""
    kind, colon, arg = name.partition(":")
    known = kind in {"digits", "fakedata", "mnist", "cifar10"} and not colon
    if not (known or kind == "imagefolder"):
        msg = f"--dataset: unknown dataset {name!r}; use {DATASET_NAMES}"
        raise BadInputError(msg)
    if kind == "imagefolder" and not arg:
        msg = "--dataset imagefolder needs a path: use imagefolder:/path/to/folder"
        raise BadInputError(msg)


def resolve_dataset(
    name: str,
    data_root: Path | None,
    *,
    allow_download: bool = False,
    fallback_fakedata: bool = False,
    progress: Callable[[str], None] = print,
) -> DatasetSpec:
    """Check that a dataset is there (or fetch it, or fall back); raise one clear error otherwise."""
    check_dataset_name(name)
    kind, _, arg = name.partition(":")
    if kind in {"digits", "fakedata"} and not arg:
        return DatasetSpec(name=name, kind=kind)
    if kind == "imagefolder":
        path = Path(arg).expanduser().resolve() if arg else None
        if path is None or not path.is_dir() or not any(p.is_dir() for p in path.iterdir()):
            return _unavailable(
                name,
                f"{arg or '(no path)'} is not a folder of class subfolders",
                "use imagefolder:/path/to/folder",
                fallback_fakedata,
            )
        return DatasetSpec(name=name, kind="imagefolder", host_path=path)
    root = (data_root or Path("data")).expanduser().resolve()
    present = _mnist_present if kind == "mnist" else _cifar_present
    if not present(root) and allow_download:
        download(kind, root, progress)  # type: ignore[arg-type]
    if not present(root):
        layout = "MNIST/raw/" if kind == "mnist" else "cifar-10-batches-py/"
        return _unavailable(
            name,
            f"{kind} not found under {root}/{layout}",
            "pass --data-root DIR, or --allow-download",
            fallback_fakedata,
        )
    return DatasetSpec(name=name, kind=kind, host_path=root)


def _unavailable(name: str, problem: str, fix: str, fallback: bool) -> DatasetSpec:
    if fallback:
        return DatasetSpec(name="fakedata", kind="fakedata", fallback_from=f"{name}: {problem}")
    msg = f"{problem}; {fix} (or --fallback-fakedata to run on FakeData instead)"
    raise BadInputError(msg)
