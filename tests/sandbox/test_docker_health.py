"""The docker backend's health checks and image lookups: what `controller doctor` relies on."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from docker.errors import APIError
from structlog.testing import capture_logs

from sandbox.backends.docker import (
    RUNNER,
    EngineHealth,
    build_all,
    check_container,
    check_engine,
    check_images,
    image_state,
)
from sandbox.backends.docker.images import CONTROLLER, HASH_LABEL
from sandbox.errors import SandboxUnavailableError
from tests.sandbox.fake_docker import FakeDockerClient

UNREACHABLE = "unix:///nonexistent/docker.sock"


def test_a_missing_image_reads_as_missing_without_an_error() -> None:
    state = image_state(FakeDockerClient(), RUNNER)
    assert not state.present and not state.current and state.error is None


def test_an_engine_error_is_not_mistaken_for_a_missing_image() -> None:
    client = FakeDockerClient()
    client.images.fail = APIError("500 Server Error: Internal Server Error")
    with capture_logs() as logs:
        state = image_state(client, RUNNER)
    assert not state.present and state.error is not None and "500 Server Error" in state.error
    assert logs[0]["event"] == "images.lookup_failed" and "500" in logs[0]["reason"]


def test_an_unreachable_engine_is_not_mistaken_for_a_missing_image() -> None:
    client = FakeDockerClient()
    client.images.fail = requests.exceptions.ConnectionError("Connection aborted")
    assert "ConnectionError" in (image_state(client, RUNNER).error or "")


def test_a_current_image_matches_its_inputs_hash() -> None:
    client = FakeDockerClient()
    client.images.tags[RUNNER.tag] = {HASH_LABEL: RUNNER.inputs_hash()}
    state = image_state(client, RUNNER)
    assert state.present and state.current and state.error is None


def test_build_refuses_to_guess_when_the_engine_cannot_say_what_is_built() -> None:
    client = FakeDockerClient()
    client.images.fail = APIError("500 Server Error")
    with pytest.raises(SandboxUnavailableError, match="controller doctor"):
        build_all(client, progress=lambda line: None, only=(RUNNER,))


def test_an_unreachable_engine_fails_every_check_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", UNREACHABLE)
    engine = check_engine(timeout=5)
    assert not engine.reachable and engine.address == UNREACHABLE
    assert engine.error is not None and "controller doctor" in engine.error
    assert all(state.error == engine.error for state in check_images(engine))
    probe = check_container(engine)
    assert not probe.ok and probe.machinery_failed


def test_engine_info_decides_the_gpu_runtime() -> None:
    assert EngineHealth(address="x", runtimes=frozenset({"runc", "nvidia"})).gpu_runtime is True
    assert EngineHealth(address="x", runtimes=frozenset({"runc"})).gpu_runtime is False
    assert EngineHealth(address="x", runtimes=frozenset({"runc"}), has_cdi=True).gpu_runtime is True
    assert EngineHealth(address="x").gpu_runtime is None  # info unavailable: cannot tell


@pytest.mark.docker
def test_a_real_engine_passes_every_check(docker_client: Any) -> None:
    engine = check_engine()
    assert engine.reachable and engine.version != "?" and engine.root_dir
    assert check_images(engine, with_controller=False)[0].present
    probe = check_container(engine)
    assert probe.ok, probe.detail
    assert probe.uid == "1000" and "as uid 1000" in probe.detail


def test_only_the_runner_image_is_required_for_runs() -> None:
    client = FakeDockerClient()
    client.images.tags[RUNNER.tag] = {HASH_LABEL: "stale"}
    client.images.tags[CONTROLLER.tag] = {HASH_LABEL: "stale"}
    runner, controller = check_images(EngineHealth(address="fake", client=client))
    assert runner.present and not runner.current and runner.required
    assert controller.present and not controller.current and not controller.required

