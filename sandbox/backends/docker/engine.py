"""Connecting to the Docker engine, with an error that says what to do."""

from __future__ import annotations

import os
from typing import Any

from sandbox.errors import SandboxUnavailableError
from sandbox.limits import engine_call_timeout_s, max_reason_chars

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def docker_host() -> str:
    """The engine address in use: $DOCKER_HOST or the default socket."""
    return os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST)


def connect(timeout: int = engine_call_timeout_s) -> Any:
    """A docker client that has answered a ping; raise SandboxUnavailableError otherwise."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a hard dependency
        msg = "the docker Python package is missing; run `make test` or `pip install sandlab`"
        raise SandboxUnavailableError(msg) from exc
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        msg = (
            f"docker engine not reachable at {docker_host()}; start it (`make run` starts it) "
            "or run `controller doctor`"
        )
        raise SandboxUnavailableError(msg) from exc
    return client


def engine_error_text(exc: BaseException) -> str:
    """An engine exception as one short line for logs and reasons: its type and first line."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0][:max_reason_chars] if lines else ''}"
