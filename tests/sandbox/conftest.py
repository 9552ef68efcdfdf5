"""Fixtures the sandbox suites share: every backend a conformance or hostile case runs on."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from sandbox.backends.local import LocalSandbox
from sandbox.base import Sandbox

FORK_PRELOAD = ("json", "sandbox.harness.emit")
"""What the fork server preloads here: importable without torch, so CI runs these cases."""


@pytest.fixture(scope="module")
def forking_sandbox() -> Iterator[LocalSandbox]:
    """The local backend with its fork server, shared by the module (the server is reused)."""
    sandbox = LocalSandbox(allow_weaker=True, python=sys.executable, fork_server=True, preload=FORK_PRELOAD)
    yield sandbox
    sandbox.close()


@pytest.fixture(params=["docker", "local", "local-fork"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    if request.param == "docker":
        request.applymarker(pytest.mark.docker)
        yield request.getfixturevalue("docker_sandbox")
    elif request.param == "local-fork":
        yield request.getfixturevalue("forking_sandbox")
    else:
        yield LocalSandbox(allow_weaker=True, python=sys.executable)
