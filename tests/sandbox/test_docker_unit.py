"""DockerSandbox at the kwargs level, with a fake client: no engine needed."""

import socket
import time
from pathlib import Path

from docker.errors import NotFound
from structlog.testing import capture_logs

from sandbox.backends.docker import DockerSandbox, labels, reap_orphans
from sandbox.backends.docker.container import container_kwargs, job_command
from sandbox.backends.docker.pool import WarmPool
from sandbox.base import Job
from sandbox.policy import DataMount, Policy, load_policy
from sandbox.results import Status
from tests.sandbox.fake_docker import FakeAPIError, FakeDockerClient, FakeListedContainer

OWNER = {"sandlab.run": "r1", "sandlab.attempt": "0001", "sandlab.owner_pid": "42", "sandlab.owner_host": "h"}


def test_security_defaults_reach_the_engine() -> None:
    policy = load_policy("default")
    kw = container_kwargs(Job(command=["true"]), policy, "img", [], OWNER)
    assert kw["network_mode"] == "none"
    assert kw["read_only"] is True
    assert kw["cap_drop"] == ["ALL"]
    assert kw["security_opt"] == ["no-new-privileges"]
    assert kw["user"] == "1000:1000"
    assert kw["pids_limit"] == policy.pids
    assert kw["mem_limit"] == kw["memswap_limit"] == int(policy.memory)
    assert kw["nano_cpus"] == 1_000_000_000
    assert "size=" in kw["tmpfs"]["/tmp"] and "size=" in kw["tmpfs"]["/workspace"]
    assert kw["labels"] == OWNER
    assert kw["device_requests"] == []
    assert not kw["mounts"]
    assert "volumes" not in kw and "privileged" not in kw


def test_host_environment_is_not_inherited() -> None:
    kw = container_kwargs(Job(command=["true"], env={"A": "1"}), Policy(), "img", [], OWNER)
    assert kw["environment"]["A"] == "1"
    assert "PATH" not in kw["environment"] or kw["environment"]["PATH"] != __import__("os").environ.get("PATH")


def test_gpus_become_a_device_request_with_explicit_ids() -> None:
    policy = Policy(gpus=[2, 5])
    kw = container_kwargs(Job(command=["true"]), policy, "img", [2, 5], OWNER)
    request = kw["device_requests"][0]
    assert request["DeviceIDs"] == ["2", "5"]
    assert request["Driver"] == "nvidia"
    assert kw["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert kw["environment"]["NVIDIA_VISIBLE_DEVICES"] == "2,5"


def test_data_mounts_are_read_only() -> None:
    policy = Policy(data_mounts=(DataMount(source="/srv/cifar", target="/data/cifar"),))
    mount = container_kwargs(Job(command=["true"]), policy, "img", [], OWNER)["mounts"][0]
    assert mount["ReadOnly"] is True and mount["Target"] == "/data/cifar" and mount["Source"] == "/srv/cifar"


def test_job_is_wrapped_in_the_inner_timeout() -> None:
    cmd = job_command(Job(command=["python3", "x.py"]), Policy(timeout=30, kill_grace=4))
    assert cmd == ["timeout", "-k", "4s", "30s", "python3", "x.py"]


def test_engine_failure_is_infra_error_not_the_codes_fault() -> None:
    client = FakeDockerClient()
    client.api.fail_create = True
    result = DockerSandbox(client=client).run(Job(command=["true"]), Policy())
    assert result.status is Status.infra_error
    assert "engine failure" in (result.reason or "")


def test_container_is_removed_even_when_the_engine_fails_mid_attempt(tmp_path: Path) -> None:
    client = FakeDockerClient()
    client.api.fail_exec = True
    result = DockerSandbox(client=client).run(Job(command=["true"], workspace=tmp_path), Policy())
    assert result.status is Status.infra_error
    assert client.api.removed == ["c0"]
    assert client.api.started == ["c0"]
    created = client.api.created[0]
    assert created["host_config"]["read_only"] is True and created["host_config"]["cap_drop"] == ["ALL"]
    assert created["user"] == "1000:1000" and created["labels"]["sandlab.run"] == "adhoc"


def test_a_container_that_fails_to_start_is_removed_not_leaked() -> None:
    client = FakeDockerClient()
    client.api.fail_start = True
    result = DockerSandbox(client=client).run(Job(command=["true"]), Policy())
    assert result.status is Status.infra_error and "cannot start" in (result.reason or "")
    assert client.api.removed == ["c0"]


def test_infra_error_keeps_the_shared_result_fields() -> None:
    client = FakeDockerClient()
    client.api.fail_create = True
    result = DockerSandbox(client=client).run(Job(command=["true"]), Policy())
    assert result.backend == "docker" and result.image == "sandlab-runner:latest"
    assert result.exit_code is None and result.host and result.limits == Policy()
    assert result.stdout_bytes == 0 and result.events == []


def test_a_failed_remove_is_logged_with_its_reason() -> None:
    client = FakeDockerClient()
    client.api.fail_remove = FakeAPIError("device or resource busy")
    sandbox = DockerSandbox(client=client)
    with capture_logs() as logs:
        sandbox._remove("c9")
    assert [(e["event"], e["log_level"]) for e in logs] == [("docker.remove_failed", "warning")]
    assert "device or resource busy" in logs[0]["reason"] and logs[0]["container_id"] == "c9"


def test_removing_an_already_gone_container_is_only_debug() -> None:
    client = FakeDockerClient()
    client.api.fail_remove = NotFound("No such container: c9")
    with capture_logs() as logs:
        DockerSandbox(client=client)._remove("c9")
    assert [(e["event"], e["log_level"]) for e in logs] == [("docker.remove_already_gone", "debug")]


def test_a_failed_kill_is_logged_with_its_reason() -> None:
    client = FakeDockerClient()
    client.api.fail_kill = FakeAPIError("engine hung up")
    with capture_logs() as logs:
        DockerSandbox(client=client)._kill("c3")
    assert logs[0]["event"] == "docker.kill_failed" and "engine hung up" in logs[0]["reason"]


def test_an_image_id_the_engine_cannot_give_is_logged_and_looked_up_again() -> None:
    client = FakeDockerClient()
    client.api.fail_inspect_image = FakeAPIError("timeout")
    sandbox = DockerSandbox(client=client)
    with capture_logs() as logs:
        assert sandbox.image_id() is None
    assert logs[0]["event"] == "docker.image_id_failed" and "timeout" in logs[0]["reason"]
    client.api.fail_inspect_image = None
    assert sandbox.image_id() == "sha256:feed"


def test_docker_seals_host_files_and_isolates_concurrent_jobs() -> None:
    sandbox = DockerSandbox(client=FakeDockerClient())
    assert sandbox.seals_host_files is True and sandbox.isolates_concurrent_jobs is True


def test_a_pool_that_cannot_fill_logs_why_and_hands_out_nothing() -> None:
    def create(policy: Policy, gpu_ids: list[int], command: list[str], run_id: str) -> str:
        raise FakeAPIError("out of pids")

    with capture_logs() as logs, WarmPool(create, lambda cid: None, size=1) as pool:
        assert pool.take(Policy(), []) is None
        deadline = time.monotonic() + 5
        while not logs and time.monotonic() < deadline:
            time.sleep(0.01)
    assert logs[0]["event"] == "pool.fill_failed" and "out of pids" in logs[0]["reason"]


def test_a_pool_remove_failure_on_close_is_logged() -> None:
    def remove(container_id: str) -> None:
        raise FakeAPIError("engine gone")

    pool = WarmPool(lambda *args: "w1", remove, size=1)
    pool._ready["k"] = ["w1"]
    with capture_logs() as logs:
        pool.close()
    assert [e["event"] for e in logs] == ["pool.remove_failed"] and logs[0]["container_id"] == "w1"


def _orphan(short_id: str, fail: Exception | None = None) -> FakeListedContainer:
    dead = {labels.OWNER_HOST: socket.gethostname(), labels.OWNER_PID: "999999999", labels.ATTEMPT: "0001"}
    return FakeListedContainer(short_id, dead, fail_remove=fail)


def test_the_reaper_reports_and_logs_an_orphan_it_could_not_remove() -> None:
    client = FakeDockerClient()
    client.containers.listed = [_orphan("a1"), _orphan("b2", FakeAPIError("removal in progress"))]
    with capture_logs() as logs:
        report = reap_orphans(client)
    assert report.removed == ["a1"] and report.failed == ["b2"]
    assert [(e["event"], e["log_level"]) for e in logs] == [("reaper.remove_failed", "warning")]
    assert "removal in progress" in logs[0]["reason"]


def test_the_reaper_treats_an_orphan_already_gone_as_neither_removed_nor_failed() -> None:
    client = FakeDockerClient()
    client.containers.listed = [_orphan("c3", NotFound("No such container"))]
    with capture_logs() as logs:
        report = reap_orphans(client)
    assert report.removed == [] and report.failed == []
    assert [(e["event"], e["log_level"]) for e in logs] == [("reaper.already_gone", "debug")]


def test_the_reaper_survives_a_container_removed_between_listing_and_inspecting() -> None:
    # Another run's own cleanup can remove its container while the reaper's listing is inspecting it.
    client = FakeDockerClient()
    client.containers.listed = [_orphan("d4")]
    client.containers.vanished = 1
    report = reap_orphans(client)
    assert report.removed == ["d4"] and report.failed == []
