"""DockerSandbox at the kwargs level, with a fake client: no engine needed."""

from pathlib import Path

from sandbox.backends.docker import DockerSandbox, container_kwargs, job_command
from sandbox.base import Job
from sandbox.policy import DataMount, Policy, load_policy
from sandbox.results import Status
from tests.sandbox.fake_docker import FakeDockerClient

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
