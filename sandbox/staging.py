"""Moving files into and out of a sandbox as tar streams, never following a symlink."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

from sandbox.limits import copy_chunk_bytes, max_collect_bytes

RESERVED_DIR = ".sandlab"
"""Workspace folder the harness owns (events); never staged from the host."""


def pack_workspace(root: Path | None, files: dict[str, bytes], uid: int, gid: int) -> bytes:
    """A tar of `root` (regular files and folders only) plus `files`, owned by uid:gid."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if root is not None:
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if rel.parts[0] == RESERVED_DIR:
                    continue  # the harness's own folder always starts empty
                if path.is_symlink() or not (path.is_file() or path.is_dir()):
                    continue  # a link could point anywhere on the host: never stage one
                info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
                info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
                if info.isfile():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(_safe_relative(name).as_posix())
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, uid, gid
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_folder(root: Path) -> bytes:
    """A tar of everything under `root`, as it is (links stay links: `extract_outputs` skips them)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(root), arcname=".", recursive=True)
    return buffer.getvalue()


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        msg = f"unsafe workspace path {name!r}; use a relative path without '..'"
        raise ValueError(msg)
    return path


def extract_outputs(stream: IO[bytes], dest: Path, *, max_bytes: int = max_collect_bytes) -> list[str]:
    """Extract regular files and folders from a tar stream into `dest`.

    Symlinks, hard links, devices and FIFOs are skipped and reported, as is anything that
    would land outside `dest` or push the total past `max_bytes`. Nothing is ever followed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    total = 0
    root = dest.resolve()
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not name or name == ".":
                continue
            try:
                rel = _safe_relative(name)
            except ValueError:
                skipped.append(f"{name} (unsafe path)")
                continue
            target = root / rel
            if member.issym() or member.islnk():
                skipped.append(f"{name} (link to {member.linkname})")
                continue
            if member.isdir():
                _mkdir_inside(root, target)
                continue
            if not member.isfile():
                skipped.append(f"{name} (not a regular file)")
                continue
            if total + member.size > max_bytes:
                skipped.append(f"{name} (over the {max_bytes} byte collection cap)")
                continue
            _mkdir_inside(root, target.parent)
            source = tar.extractfile(member)
            if source is None:
                continue
            # O_NOFOLLOW: an earlier entry cannot have planted a link here (links are
            # skipped), but refuse one anyway rather than write through it.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(copy_chunk_bytes):
                    out.write(chunk)
            total += member.size
    return skipped


def _mkdir_inside(root: Path, path: Path) -> None:
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            msg = f"refusing to write through a symlink at {current}"
            raise ValueError(msg)
        current.mkdir(exist_ok=True)
