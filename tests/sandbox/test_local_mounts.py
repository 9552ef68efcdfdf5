"""The local backend's data mounts: read-only copies outside the caller's folders."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from sandbox.backends.local import LocalSandbox
from sandbox.backends.local_mounts import mount_path, stage_mounts, unseal
from sandbox.base import Job
from sandbox.errors import PolicyError
from sandbox.policy import DataMount, Policy, load_policy


def _dataset(root: Path) -> Path:
    data = root / "cifar"
    (data / "train").mkdir(parents=True)
    (data / "train" / "x.bin").write_bytes(b"pixels")
    (data / "labels.txt").write_text("cat\n")
    (data / "escape").symlink_to("/etc")
    (data / "train" / "passwd").symlink_to("/etc/passwd")
    os.mkfifo(data / "pipe")
    return data


def test_a_bind_mount_is_copied_sealed_and_without_links_or_fifos(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    policy = Policy(data_mounts=(DataMount(source=str(data), target="/data/cifar"),))
    root = stage_mounts(policy, scratch)
    assert root == scratch / "mounts"
    copy = root / "data" / "cifar"
    assert (copy / "train" / "x.bin").read_bytes() == b"pixels" and (copy / "labels.txt").read_text() == "cat\n"
    assert sorted(p.name for p in copy.rglob("*")) == ["labels.txt", "train", "x.bin"]
    for path in [root, root / "data", *copy.rglob("*"), copy]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o555 if path.is_dir() else 0o444), (path, oct(mode))
        assert path.lstat().st_uid == os.getuid()  # this process's uid (root here), never the job's
    unseal(root)


def test_a_single_file_can_be_mounted(tmp_path: Path) -> None:
    source = tmp_path / "weights.pt"
    source.write_bytes(b"w")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    root = stage_mounts(Policy(data_mounts=(DataMount(source=str(source), target="/models/w.pt"),)), scratch)
    assert root is not None and (root / "models" / "w.pt").read_bytes() == b"w"
    unseal(root)


def test_a_missing_source_is_an_error_not_an_empty_mount(tmp_path: Path) -> None:
    policy = Policy(data_mounts=(DataMount(source=str(tmp_path / "nope"), target="/data/x"),))
    with pytest.raises(FileNotFoundError):
        stage_mounts(policy, tmp_path)


def test_targets_cannot_climb_out_of_the_mounts_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.\."):
        DataMount(source="/srv/x", target="/data/../../etc")
    with pytest.raises(ValueError, match=r"\.\."):
        mount_path(tmp_path, "/data/../x")


def test_a_policy_file_with_a_climbing_target_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_mounts:\n  - {source: /srv/x, target: /data/../etc}\n")
    with pytest.raises(PolicyError, match="data_mounts"):
        load_policy(bad)


def test_without_mounts_nothing_is_staged(tmp_path: Path) -> None:
    assert stage_mounts(Policy(), tmp_path) is None and not (tmp_path / "mounts").exists()


def test_unenforced_names_what_the_local_backend_cannot_do_with_mounts() -> None:
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable)
    bind = Policy(read_only_rootfs=False, data_mounts=(DataMount(source="/srv/x", target="/data/x"),))
    volume = Policy(read_only_rootfs=False, data_mounts=(DataMount(source="vol", target="/data/v", type="volume"),))
    sandbox._can_drop = True
    assert not any("data_mounts" in gap for gap in sandbox.unenforced(bind))
    assert any("volume" in gap for gap in sandbox.unenforced(volume))
    sandbox._can_drop = False
    assert any("not read-only to the job" in gap for gap in sandbox.unenforced(bind))


_SH_PROBE = 'p="$SANDLAB_MOUNT_PREFIX/data/probe/answer.txt"; cat "$p"; echo; id -u; (echo x > "$p") 2>/dev/null && echo WROTE || echo refused'


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_a_job_running_as_another_uid_reads_the_copy_and_cannot_write_it(tmp_path: Path) -> None:
    data = tmp_path / "probe"
    data.mkdir()
    (data / "answer.txt").write_text("42")
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable)
    # sh needs none of the interpreter probe's conditions: force the privilege drop.
    sandbox._can_drop = True
    policy = load_policy("default").with_overrides(data_mounts=[{"source": str(data), "target": "/data/probe"}])
    result = sandbox.run(Job(command=["sh", "-c", _SH_PROBE]), policy)
    assert result.stdout.split() == ["42", "1000", "refused"], (result.stdout, result.stderr)
    assert sandbox.seals_host_files and not any("data_mounts" in gap for gap in sandbox.unenforced(policy))
    assert (data / "answer.txt").read_text() == "42"
