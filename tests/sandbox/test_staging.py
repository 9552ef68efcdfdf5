import io
import os
import tarfile
from pathlib import Path

import pytest

from sandbox.staging import extract_outputs, pack_workspace


def _tar(entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in entries:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    buffer.seek(0)
    return buffer


def test_pack_skips_symlinks_and_the_reserved_folder(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / "link").symlink_to("/etc/passwd")
    (tmp_path / ".sandlab").mkdir()
    (tmp_path / ".sandlab" / "events.jsonl").write_text("stale")
    blob = pack_workspace(tmp_path, {"extra/c.json": b"{}"}, 1000, 1000)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = sorted(tar.getnames())
        assert all(m.uid == 1000 for m in tar.getmembers())
    assert names == ["a.py", "extra/c.json", "sub", "sub/b.txt"]


def test_pack_refuses_unsafe_extra_paths() -> None:
    with pytest.raises(ValueError, match="unsafe"):
        pack_workspace(None, {"../escape": b""}, 1000, 1000)


def test_extract_never_follows_or_creates_links(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    link = tarfile.TarInfo("leak")
    link.type, link.linkname = tarfile.SYMTYPE, str(secret)
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, str(secret)
    ok = tarfile.TarInfo("ok.txt")
    evil = tarfile.TarInfo("../../evil.txt")
    dest = tmp_path / "out"
    skipped = extract_outputs(_tar([link, hard, ok, evil], {"ok.txt": b"fine", "../../evil.txt": b"x"}), dest)
    assert (dest / "ok.txt").read_text() == "fine"
    assert not (dest / "leak").exists() and not (dest / "hard").exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert len(skipped) == 3
    assert secret.read_text() == "host secret"


def test_extract_respects_the_size_cap(tmp_path: Path) -> None:
    big, small = tarfile.TarInfo("big.bin"), tarfile.TarInfo("small.bin")
    skipped = extract_outputs(_tar([big, small], {"big.bin": b"x" * 1000, "small.bin": b"y"}), tmp_path, max_bytes=100)
    assert not (tmp_path / "big.bin").exists() and (tmp_path / "small.bin").exists()
    assert any("big.bin" in s for s in skipped)


def test_extract_refuses_to_write_through_an_existing_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    os.symlink(target, dest / "sub")
    entry = tarfile.TarInfo("sub/file.txt")
    with pytest.raises(ValueError, match="symlink"):
        extract_outputs(_tar([entry], {"sub/file.txt": b"x"}), dest)
    assert not (target / "file.txt").exists()
