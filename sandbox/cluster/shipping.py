"""Data a job mounts, moved to the node that runs it as bytes, never through a shared filesystem.

The controller packs each bind-mounted folder of a policy once (a tar, named by the sha256
of its bytes) and puts it in Ray's object store once per run. A node materialises it in its
own cache, keyed by that hash, the first time a job there mounts it; later jobs on the node
reuse the folder. A node never sees a path of the controller's host.

Owner-only files never leave the controller's host. The controller keeps the run's private
labels owner-only (the scorer's, nobody else's): a folder that holds any file or folder
that others may not read is refused, so no policy can ship them by mistake.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import PolicyError
from sandbox.staging import extract_outputs

CACHE_ENV = "SANDLAB_NODE_CACHE"
"""Where a node keeps materialised data (default ~/.cache/sandlab/node-data)."""


@dataclass(frozen=True)
class Packed:
    """One folder as a tar, named by the hash of its bytes."""

    digest: str
    data: bytes


def pack_dir(root: Path) -> Packed:
    """A deterministic tar of a folder's regular files and folders (no links, sorted, no owners).

    Raises PolicyError for a folder holding anything others may not read: that is how the
    controller marks what must stay on its host.
    """
    if not root.is_dir():
        msg = f"data mount source {root} is not a folder on the controller's host; fix data_mounts"
        raise PolicyError(msg)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [root, *sorted(root.rglob("*"))]:
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            mode = path.stat().st_mode
            if not mode & stat.S_IROTH:
                msg = (
                    f"{path} is owner-only, and owner-only files never leave the controller's host; "
                    "mount a folder without it"
                )
                raise PolicyError(msg)
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix() or ".")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isfile():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    data = buffer.getvalue()
    return Packed(hashlib.sha256(data).hexdigest(), data)


def node_cache_root() -> Path:
    """This node's data cache."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "sandlab" / "node-data"


def cached_path(digest: str) -> Path | None:
    """The materialised folder for this hash on this node, if it is there already."""
    path = node_cache_root() / digest
    return path if path.is_dir() else None


def materialise(digest: str, data: bytes) -> Path:
    """Unpack a shipped folder into the node's cache (atomically; a racing job's copy wins)."""
    if hashlib.sha256(data).hexdigest() != digest:
        msg = f"shipped data does not match its hash {digest[:12]}"
        raise ValueError(msg)
    root = node_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / digest
    if final.is_dir():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=root))
    try:
        skipped = extract_outputs(io.BytesIO(data), tmp, max_bytes=len(data))
        if skipped:
            msg = f"shipped data held entries that cannot be materialised: {', '.join(skipped[:3])}"
            raise ValueError(msg)
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # jobs run as another uid: readable, not writable
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise  # not a lost race: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
