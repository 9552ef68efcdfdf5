"""The doctor's rows: what fails it, what only warns."""

from __future__ import annotations

from controller.doctor import image_checks
from sandbox.backends.docker import RUNNER, EngineHealth
from sandbox.backends.docker.images import CONTROLLER, HASH_LABEL
from tests.sandbox.fake_docker import FakeDockerClient


def test_a_stale_controller_image_warns_and_a_stale_runner_fails() -> None:
    client = FakeDockerClient()
    client.images.tags[RUNNER.tag] = {HASH_LABEL: "stale"}
    client.images.tags[CONTROLLER.tag] = {HASH_LABEL: "stale"}
    runner, controller = image_checks(EngineHealth(address="fake", client=client), with_controller_image=True)
    assert runner.status == "fail" and "stale" in runner.detail
    assert controller.status == "warn" and "only needed to run the controller in a container" in controller.detail
