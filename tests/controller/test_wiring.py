"""Wiring: which backend runs the jobs, and whether its numbers can be sealed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from controller.errors import BadInputError
from controller.registry import RunConfig
from controller.store import RunStore
from controller.wiring import build_loop, integrity_of
from sandbox.backends.local import LocalSandbox
from tests.controller.fakes import FakeSandbox


class LeakySandbox(FakeSandbox):
    """Plays honest jobs, but on a backend whose jobs could read the host's files."""

    seals_host_files = False


def test_a_backend_that_cannot_seal_the_labels_is_refused_unless_allowed(tmp_path: Path) -> None:
    strict = RunConfig(budget_s=600)
    with pytest.raises(BadInputError, match=r"\(it cannot run jobs as another user\); or use the docker backend"):
        integrity_of(LeakySandbox(), strict)
    with pytest.raises(BadInputError, match="--allow-weaker"):
        integrity_of(LeakySandbox(), strict)
    assert integrity_of(LeakySandbox(), strict.model_copy(update={"allow_weaker": True})) == "weaker"
    assert integrity_of(FakeSandbox(), strict) == "sealed"


class SharedUidSandbox(FakeSandbox):
    """Seals the labels, but runs every job as one uid in one pid namespace (the local backend as root)."""

    isolates_concurrent_jobs = False


def test_jobs_that_run_at_once_on_a_shared_uid_are_not_sealed(tmp_path: Path) -> None:
    one_at_a_time = RunConfig(budget_s=600, backend="local")
    assert integrity_of(SharedUidSandbox(), one_at_a_time) == "sealed"
    parallel = one_at_a_time.model_copy(update={"parallel": 2})
    with pytest.raises(BadInputError, match="--parallel 1"):
        integrity_of(SharedUidSandbox(), parallel)
    assert integrity_of(SharedUidSandbox(), parallel.model_copy(update={"allow_weaker": True})) == "weaker"
    assert integrity_of(FakeSandbox(), parallel) == "sealed"
    assert LocalSandbox(allow_weaker=True).isolates_concurrent_jobs is False


def test_a_weaker_run_says_so_in_run_json_and_the_report(tmp_path: Path) -> None:
    config = RunConfig(budget_s=3600, seeds=[0, 1], allow_weaker=True)
    store, state = RunStore.create(tmp_path / "runs", config, "weak")
    final = build_loop(store, state, LeakySandbox(), lambda line: None).run()
    assert final.integrity == "weaker"
    assert json.loads((store.root / "run.json").read_text())["integrity"] == "weaker"
    assert "Not sealed" in (store.root / "report" / "summary.md").read_text()


def test_the_local_backend_reports_whether_it_can_seal(tmp_path: Path) -> None:
    local = LocalSandbox(allow_weaker=True)
    verdict = "sealed" if local.seals_host_files else "weaker"
    assert integrity_of(local, RunConfig(budget_s=60, backend="local", allow_weaker=True)) == verdict
    if not local.seals_host_files:  # it cannot run jobs as another user here: refused, saying why
        fix = "an interpreter outside /root" if os.geteuid() == 0 else "run the controller as root"
        with pytest.raises(BadInputError, match=fix):
            integrity_of(local, RunConfig(budget_s=60, backend="local"))
