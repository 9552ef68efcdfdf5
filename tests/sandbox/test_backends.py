"""Choosing a backend by config, and what both backends share (sandbox.backends.capture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import TypeAdapter

from sandbox.backends import RUNNER_IMAGE, BackendConfig, DockerBackendConfig, build_sandbox
from sandbox.backends.capture import Capture, timeout_argv
from sandbox.backends.local import LocalSandbox
from sandbox.base import Job, Sandbox
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Status


def test_the_timeout_wraps_the_command_with_grace_then_limit() -> None:
    assert timeout_argv(["python3", "x.py"], Policy(timeout=30, kill_grace=4)) == [
        "timeout", "-k", "4s", "30s", "python3", "x.py",
    ]


def test_the_interpreter_replaces_only_a_bare_python_program() -> None:
    policy = Policy(timeout=30, kill_grace=4)
    assert timeout_argv(["python", "-c", "pass"], policy, interpreter="/venv/bin/python")[4:] == [
        "/venv/bin/python", "-c", "pass",
    ]
    assert timeout_argv(["sh", "-c", "python3 x.py"], policy, interpreter="/venv/bin/python")[4:] == [
        "sh", "-c", "python3 x.py",
    ]
    assert timeout_argv(["python3", "x.py"], policy)[4] == "python3"  # no interpreter: untouched


def test_an_infra_error_is_built_from_what_was_captured() -> None:
    capture = Capture(Policy(), backend="local")
    capture.out.write(b"partial output\n")
    result = capture.infra_error("the engine went away", image="img", container_id="c1")
    assert result.status is Status.infra_error and result.exit_code is None
    assert result.stdout == "partial output\n" and result.stdout_bytes == 15
    assert result.backend == "local" and result.image == "img" and result.container_id == "c1"
    assert result.reason == "the engine went away" and result.duration_s >= 0


def test_a_result_holds_events_to_the_policys_output_cap() -> None:
    line = json.dumps({"kind": "metric", "name": "loss", "value": 0.5}).encode() + b"\n"
    capture = Capture(Policy(output_cap=10 * len(line)), backend="docker")
    result = capture.result(status=Status.ok, reason="exited 0", exit_code=0, events_blob=line * 25)
    assert len(result.events) == 10 and result.event_stats.over_budget == 15
    assert AttemptResult.model_validate_json(result.model_dump_json()) == result


def test_a_config_builds_the_backend_it_names() -> None:
    config = TypeAdapter(BackendConfig).validate_python({"type": "local", "allow_weaker": True})
    sandbox = build_sandbox(config)
    assert isinstance(sandbox, LocalSandbox) and sandbox.allow_weaker
    assert DockerBackendConfig().image == RUNNER_IMAGE == "sandlab-runner:latest"


def test_the_runner_image_name_and_the_local_backend_need_no_docker_package() -> None:
    # `None` in sys.modules makes any `import docker` fail, as on a host without it.
    code = (
        "import sys; sys.modules['docker'] = None\n"
        "from sandbox.backends import RUNNER_IMAGE, LocalBackendConfig, build_sandbox\n"
        "build_sandbox(LocalBackendConfig(allow_weaker=True))\n"
        "print(RUNNER_IMAGE, [m for m in sys.modules if m.startswith('sandbox.backends.docker')])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "sandlab-runner:latest []"


class _Plain(Sandbox):
    def run(self, job: Job, policy: Policy) -> AttemptResult:
        raise NotImplementedError


def test_a_sandbox_that_does_not_say_it_seals_host_files_does_not() -> None:
    assert _Plain().seals_host_files is False
    with pytest.raises(AttributeError):
        _Plain().seals_host_files = True  # type: ignore[misc]


def test_the_local_backend_seals_only_when_jobs_run_as_another_uid() -> None:
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable)
    if os.geteuid() != 0:
        assert sandbox.seals_host_files is False  # jobs run as this very uid
    sandbox._can_drop = True
    assert sandbox.seals_host_files is True
    sandbox._can_drop = False
    assert sandbox.seals_host_files is False


def test_a_backend_is_chosen_by_name_from_the_settings_that_apply_to_it() -> None:
    from sandbox.backends import BACKENDS, DockerBackendConfig, LocalBackendConfig, backend_config
    from sandbox.errors import PolicyError

    settings = {"image": "custom:1", "pool_size": 2, "allow_weaker": True}
    assert backend_config("docker", **settings) == DockerBackendConfig(image="custom:1", pool_size=2)
    assert backend_config("local", **settings) == LocalBackendConfig(allow_weaker=True)
    assert set(BACKENDS) == {"docker", "local"}
    with pytest.raises(PolicyError, match="use docker or local"):
        backend_config("podman")


def test_only_a_backend_that_says_so_isolates_concurrent_jobs() -> None:
    assert _Plain().isolates_concurrent_jobs is False
    assert LocalSandbox(allow_weaker=True).isolates_concurrent_jobs is False  # one uid, the host's pids


def test_without_a_writable_cgroup_the_local_backend_names_pids_cleanup_and_gpu_memory_as_gaps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sandbox.backends.local as local

    monkeypatch.setattr(local, "cgroup_limits", lambda: (False, False))
    bare = LocalSandbox(allow_weaker=True)
    gaps = " | ".join(bare.unenforced(Policy(gpus=1)))
    assert "pids" in gaps and "memory (no writable memory cgroup" in gaps and "setsid outlives it" in gaps
    assert "memory" not in " | ".join(bare.unenforced(Policy()))  # without CUDA, RLIMIT_AS caps memory
    monkeypatch.setattr(local, "cgroup_limits", lambda: (True, True))
    full = " | ".join(LocalSandbox(allow_weaker=True).unenforced(Policy(gpus=1)))
    assert "pids" not in full and "memory" not in full and "setsid" not in full


def test_the_cgroup_probe_matches_what_a_job_gets_and_leaves_nothing_behind() -> None:
    from sandbox.backends.local_isolation import CGROUP_ROOTS, JobCgroup, cgroup_limits

    before = {p for root in CGROUP_ROOTS if root.is_dir() for p in root.glob("sandlab-*")}
    job = JobCgroup(Policy())
    try:
        assert cgroup_limits() == (job.path is not None, job.limits_pids)
    finally:
        job.remove()
    assert {p for root in CGROUP_ROOTS if root.is_dir() for p in root.glob("sandlab-*")} == before
