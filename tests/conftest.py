"""Shared fixtures. Docker tests run for real; in CI a missing engine fails them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.backends import RUNNER_IMAGE
from sandbox.backends.docker import labels

IN_CI = bool(os.environ.get("CI"))


def _engine() -> Any | None:
    try:
        from sandbox.backends.docker import connect

        return connect(timeout=10)
    except Exception:
        return None


@pytest.fixture(scope="session")
def docker_client() -> Any:
    client = _engine()
    if client is None:
        if IN_CI:
            pytest.fail("CI is set but the Docker engine is unreachable: docker tests must run in CI")
        pytest.skip("no Docker engine (run `make test` to start one)")
    from sandbox.backends.docker import RUNNER, image_state

    state = image_state(client, RUNNER)
    if not state.present:
        message = f"{RUNNER_IMAGE} is missing; run `controller images build`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return client


@pytest.fixture(scope="session")
def docker_sandbox(docker_client: Any) -> Any:
    from sandbox.backends.docker import DockerSandbox

    return DockerSandbox(client=docker_client)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("docker") and "docker_client" not in getattr(item, "fixturenames", []):
            item.fixturenames.append("docker_client")  # type: ignore[attr-defined]


@pytest.fixture(scope="session", autouse=True)
def no_leaked_containers() -> Iterator[None]:
    """After the whole session, no sandlab attempt container may remain."""
    yield
    client = _engine()
    if client is None:
        return
    from sandbox.backends.docker import owner_is_alive

    # Other processes on this host (a second suite, a real run) may own live containers;
    # ours, and any orphan, count as leaks.
    leftover = [
        c
        for c in client.containers.list(all=True, filters={"label": labels.ATTEMPT}, ignore_removed=True)
        if (c.labels or {}).get(labels.OWNER_PID) == str(os.getpid()) or not owner_is_alive(c.labels or {})
    ]
    assert not leftover, f"leaked containers: {[c.short_id for c in leftover]}"
