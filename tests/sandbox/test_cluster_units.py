"""The Ray executor's pure parts: shipping data by hash, what fits a cluster, GPU counting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.errors import BadInputError
from controller.scheduler import ResourcePool
from sandbox.cluster.executor import Capacity, NodeResources
from sandbox.cluster.shipping import CACHE_ENV, cached_path, materialise, pack_dir
from sandbox.errors import PolicyError
from sandbox.policy import load_policy

GiB = 1024**3


def _data(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"a" * 100)
    (root / "sub" / "b.txt").write_text("b")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def test_a_folder_packs_to_the_same_hash_whatever_its_times_and_owners(tmp_path: Path) -> None:
    first = pack_dir(_data(tmp_path / "one"))
    second_root = _data(tmp_path / "two")
    os.utime(second_root / "a.bin", (1, 1))
    assert pack_dir(second_root).digest == first.digest
    (second_root / "a.bin").write_bytes(b"b" * 100)
    assert pack_dir(second_root).digest != first.digest


def test_owner_only_files_never_leave_the_controllers_host(tmp_path: Path) -> None:
    root = _data(tmp_path / "data")
    (root / "private").mkdir()
    (root / "private" / "labels.json").write_text("{}")
    (root / "private").chmod(0o700)
    with pytest.raises(PolicyError, match="owner-only"):
        pack_dir(root)
    (root / "private").chmod(0o755)
    (root / "private" / "labels.json").chmod(0o600)
    with pytest.raises(PolicyError, match="owner-only"):
        pack_dir(root)


def test_a_symlink_is_never_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _data(tmp_path / "data")
    (root / "escape").symlink_to("/etc")
    packed = pack_dir(root)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    path = materialise(packed.digest, packed.data)
    assert not (path / "escape").exists()
    assert (path / "sub" / "b.txt").read_text() == "b"


def test_a_node_materialises_once_by_hash_and_checks_the_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    packed = pack_dir(_data(tmp_path / "data"))
    assert cached_path(packed.digest) is None
    path = materialise(packed.digest, packed.data)
    assert cached_path(packed.digest) == path
    assert (path / "a.bin").read_bytes() == b"a" * 100
    assert oct((path / "a.bin").stat().st_mode & 0o777) == oct(0o644)
    assert materialise(packed.digest, packed.data) == path  # the second job reuses it
    with pytest.raises(ValueError, match="does not match"):
        materialise("0" * 64, packed.data)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [packed.digest]  # no half-made folders left


def _node(name: str, cpus: float, memory_gib: float, gpus: float) -> NodeResources:
    return NodeResources(name, f"10.0.0.{name}", cpus, int(memory_gib * GiB), gpus, {})


def test_a_policy_fits_the_cluster_only_if_one_node_can_hold_it() -> None:
    capacity = Capacity(cpus=8, memory=16 * GiB, gpus=2, nodes=(_node("1", 4, 8, 1), _node("2", 4, 8, 1)))
    train = load_policy("default").with_overrides(cpus=4, memory="6GiB")
    assert capacity.why_not(train) is None
    assert "no node" in (capacity.why_not(train.with_overrides(cpus=6)) or "")  # 8 CPUs in all, 4 per node
    assert "no node" in (capacity.why_not(train.with_overrides(gpus=2)) or "")
    pool = ResourcePool.for_cluster(capacity.cpus, capacity.memory, capacity.gpus, capacity.why_not)
    with pytest.raises(BadInputError, match="no node"):
        pool.check_fits(train.with_overrides(memory="10GiB"))


def test_a_cluster_pool_counts_gpus_and_leaves_naming_them_to_ray() -> None:
    pool = ResourcePool.for_cluster(8, 16 * GiB, 2, lambda _policy: None)
    policy = load_policy("default").with_overrides(gpus=1)
    with pool.hold(policy) as first, pool.hold(policy) as second:
        assert first.gpus == 1 and second.gpus == 1  # a count: Ray assigns the ids on the node
        assert pool.free_gpus == []
    assert len(pool.free_gpus) == 2
    host = ResourcePool(8, 16 * GiB, [0, 1])
    with host.hold(policy) as granted:
        assert granted.gpus == [0]  # on one host the pool names them


def test_a_workspace_travels_to_a_node_as_pack_workspace_would_stage_it(tmp_path: Path) -> None:
    from sandbox.backends import DockerBackendConfig
    from sandbox.base import Job
    from sandbox.cluster.executor import RaySandbox
    from sandbox.staging import RESERVED_DIR

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "code.py").write_text("x = 1\n")
    (tmp_path / RESERVED_DIR).mkdir()
    (tmp_path / RESERVED_DIR / "events.jsonl").write_text('{"kind": "finished"}\n')  # the harness's, never staged
    (tmp_path / "link.py").symlink_to(tmp_path / "sub" / "code.py")
    sandbox = RaySandbox.__new__(RaySandbox)  # no cluster: only the packing is under test
    sandbox.backend = DockerBackendConfig()
    attempt = sandbox._attempt(Job(command=["true"], workspace=tmp_path, files={"a.txt": b"a"}), load_policy("default"))
    assert attempt.job.workspace is None
    assert attempt.job.files == {"a.txt": b"a", "sub/code.py": b"x = 1\n"}
