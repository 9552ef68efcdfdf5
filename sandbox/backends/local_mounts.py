"""Data mounts for the local backend: read-only copies, staged outside the caller's folders.

Docker bind-mounts a dataset read-only at its target path. A host process has no mount
namespace of its own to put it there, so the local backend copies each `bind` mount into the
job's private scratch folder, at `<scratch>/mounts/<target without its leading slash>`, and
tells the job where through `SANDLAB_MOUNT_PREFIX`. Trusted task code opens
`os.environ.get("SANDLAB_MOUNT_PREFIX", "") + target`; on docker the variable is unset and
that is the real mount.

The copies belong to the backend's own uid (root, when it drops the job's privileges), with
folders 0o555 and files 0o444: a job running as another uid reads them and cannot change
them. The job is pointed at the copy, never at the source, so the caller's folder is not
where a write would land. (Without a mount namespace the job could still read a source that
is world-readable at its host path: what seals private files is the uid, see
`Sandbox.seals_host_files`.) A job that runs as the backend's own uid (the backend was not
started as root) could chmod the copies back, so there they are read-only only by
convention, and `LocalSandbox.unenforced` says so.

Symlinks in a source are never followed nor copied, and neither is anything that is not a
regular file or a folder: a link could point anywhere on the host, and a FIFO would block.
The source path itself is resolved as the engine would resolve a bind source.

A `volume` mount names a Docker volume, which does not exist without the engine: it cannot be
staged, is listed as unenforced, and is skipped when weaker isolation is allowed.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path, PurePosixPath

import structlog

from sandbox.limits import copy_chunk_bytes
from sandbox.policy import Policy

log = structlog.get_logger("sandlab.sandbox")

MOUNT_PREFIX_ENV = "SANDLAB_MOUNT_PREFIX"
"""The job's environment variable naming the folder that stands in for `/`, for mounts only."""
MOUNTS_DIR = "mounts"
"""Folder of the copies, inside the job's scratch folder."""
SEALED_DIR_MODE = 0o555
SEALED_FILE_MODE = 0o444


def mount_path(mounts_root: Path, target: str) -> Path:
    """Where a mount's target lands under `mounts_root` (targets are absolute, without `..`)."""
    parts = PurePosixPath(target).parts[1:]
    if ".." in parts or not parts:
        msg = f"data mount target {target!r} must be an absolute path without '..', such as /data/name"
        raise ValueError(msg)
    return mounts_root.joinpath(*parts)


def stage_mounts(policy: Policy, scratch: Path) -> Path | None:
    """Copy the policy's bind mounts into `scratch/mounts`, sealed; None without data mounts.

    Raises FileNotFoundError when a source does not exist (the policy names a dataset that
    is not there: fix the policy or fetch the data).
    """
    if not policy.data_mounts:
        return None
    root = scratch / MOUNTS_DIR
    root.mkdir()
    for mount in policy.data_mounts:
        if mount.type != "bind":
            log.warning("local.mount_skipped", target=mount.target, reason="named volumes need the docker engine")
            continue
        source = Path(mount.source).resolve(strict=True)
        dest = mount_path(root, mount.target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        skipped = _copy_tree(source, dest)
        if skipped:
            log.info("local.mount_entries_skipped", target=mount.target, count=len(skipped), first=skipped[:5])
    _seal(root)
    return root


def unseal(root: Path) -> None:
    """Make the copies removable again by their owner (a non-root owner cannot empty 0o555)."""
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o700)


def _copy_tree(source: Path, dest: Path) -> list[str]:
    """Copy regular files and folders from `source` (file or folder) to `dest`; return skips."""
    skipped: list[str] = []
    if not source.is_dir():
        _copy_file(source, dest, skipped)
        return skipped
    dest.mkdir(exist_ok=True)
    pending = [(source, dest)]
    while pending:
        src_dir, dst_dir = pending.pop()
        with os.scandir(src_dir) as entries:
            for entry in entries:
                src, dst = Path(entry.path), dst_dir / entry.name
                if entry.is_symlink():
                    skipped.append(f"{src} (symlink)")
                elif entry.is_dir(follow_symlinks=False):
                    dst.mkdir()
                    pending.append((src, dst))
                elif entry.is_file(follow_symlinks=False):
                    _copy_file(src, dst, skipped)
                else:
                    skipped.append(f"{src} (not a regular file)")
    return skipped


def _copy_file(source: Path, dest: Path, skipped: list[str]) -> None:
    # O_NOFOLLOW and the fstat close the window between the listing and the open: a file
    # swapped for a link or a FIFO meanwhile is skipped, never followed nor waited on.
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        skipped.append(f"{source} ({exc.strerror})")
        return
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            skipped.append(f"{source} (not a regular file)")
            return
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(out, "wb") as dst:
            shutil.copyfileobj(src, dst, copy_chunk_bytes)


def _seal(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), SEALED_FILE_MODE)
        os.chmod(dirpath, SEALED_DIR_MODE)
