"""The sealed splits: what each stage may see, on both backends."""

from __future__ import annotations

import json
import os
from pathlib import Path

from controller.data import PUBLIC_DATA_MOUNT
from controller.wiring import stage_policies
from sandbox.backends.local import LocalSandbox
from sandbox.base import Job
from tests.controller.fakes import FakeSandbox, make_loop

PROBE = """
import json, os, sys
prefix = os.environ.get("SANDLAB_MOUNT_PREFIX", "")
mounted = sorted(os.listdir(prefix + "/data/public"))
try:
    open(sys.argv[1]).read()
    labels = "READ"
except OSError as exc:
    labels = type(exc).__name__
print(json.dumps({"prefix": prefix, "mounted": mounted, "labels": labels}))
"""


def _prepared(tmp_path: Path):  # type: ignore[no-untyped-def]
    loop = make_loop(tmp_path, FakeSandbox(), seeds=2)
    loop.data.prepare()
    return loop


def test_training_gets_only_the_train_split_through_one_read_only_mount(tmp_path: Path) -> None:
    loop = _prepared(tmp_path)
    policy = loop.data.with_train_split(stage_policies(loop.state.config).train)
    assert [(m.source, m.target, m.type) for m in policy.data_mounts] == [
        (str(loop.store.data_dir / "public"), PUBLIC_DATA_MOUNT, "bind")
    ]
    assert sorted(os.listdir(loop.store.data_dir / "public")) == ["train.npz"]
    assert sorted(os.listdir(loop.store.data_dir / "eval")) == ["test_inputs.npy", "val_inputs.npy"]
    labels = loop.data.labels()
    assert set(labels) == {"classes", "val", "test"}
    # the prepare attempt's own copy of the labels is gone: the host's data/private is the only one
    assert not list(loop.store.attempts_dir.rglob("labels.json"))


def test_a_local_job_sees_a_copy_of_the_train_split_outside_the_run_folder(tmp_path: Path) -> None:
    loop = _prepared(tmp_path)
    local = LocalSandbox(allow_weaker=True)
    policy = loop.data.with_train_split(stage_policies(loop.state.config).train)
    labels_path = loop.store.data_dir / "private" / "labels.json"
    result = local.run(Job(command=["python3", "-c", PROBE, str(labels_path)]), policy)
    assert result.ok, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["mounted"] == ["train.npz"]  # the train split only
    assert seen["prefix"] and not Path(seen["prefix"]).is_relative_to(loop.store.root)  # a copy, elsewhere
    if local.seals_host_files:  # jobs run as another uid: the 0600 labels are out of reach
        assert seen["labels"] == "PermissionError"
    else:  # jobs run as this user: such a backend is refused for runs unless --allow-weaker
        assert seen["labels"] == "READ"
