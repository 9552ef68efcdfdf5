"""Sandbox backends, chosen by config rather than by if-chains.

    __init__.py         the configs (a discriminated union on `type`), build_sandbox, RUNNER_IMAGE
    capture.py          what both backends share: the `timeout -k` argv and the AttemptResult
    local.py            LocalSandbox: host subprocesses, weaker isolation that says so
    local_fork.py       its preloaded fork server's host side (jobs forked, not spawned)
    local_isolation.py  its probes (network namespace, uid drop) and per-job cgroup
    local_mounts.py     its read-only copies of the policy's data mounts
    docker/             DockerSandbox and everything else that needs the Docker engine

Nothing in this module imports docker: a backend's modules are imported only when a config
builds it, so a host without the docker package (or engine) can still use the local one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.base import Sandbox
from sandbox.errors import PolicyError

RUNNER_IMAGE = "sandlab-runner:latest"
"""The image jobs run in, by tag; `controller images build` makes it. The one definition."""


class DockerBackendConfig(BaseModel):
    """Run jobs in disposable Docker containers (the default, and the only strong isolation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["docker"] = "docker"
    image: str = RUNNER_IMAGE
    """Image the jobs run in; `controller images build` makes it."""
    pool_size: int = 0
    """Warm containers kept per container shape (torch already imported); 0 disables."""

    def build(self) -> Sandbox:
        """Connect to the engine and return the backend."""
        from sandbox.backends.docker import DockerSandbox

        return DockerSandbox(image=self.image, pool_size=self.pool_size)


class LocalBackendConfig(BaseModel):
    """Run jobs as host subprocesses with rlimits: for GPU boxes without an engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["local"] = "local"
    allow_weaker: bool = False
    """Accept policies that this backend can only partly enforce (it says which)."""
    fork_server: bool = False
    """Fork each job from a server that has imported `preload` already (and never touched
    CUDA), instead of starting a fresh interpreter: a torch-importing guard check starts in
    a fraction of a second rather than seconds. Each job is still a fresh, single-use process."""
    preload: tuple[str, ...] | None = None
    """What the fork server imports up front; None for the backend's default (torch and
    torchvision). Modules that are not installed are skipped, and logged once."""

    def build(self) -> Sandbox:
        """Return the backend (it warns loudly on creation)."""
        from sandbox.backends.local import LocalSandbox
        from sandbox.backends.local_fork import DEFAULT_PRELOAD

        return LocalSandbox(
            allow_weaker=self.allow_weaker,
            fork_server=self.fork_server,
            preload=self.preload if self.preload is not None else DEFAULT_PRELOAD,
        )


BackendConfig = Annotated[DockerBackendConfig | LocalBackendConfig, Field(discriminator="type")]


BACKENDS: dict[str, type[DockerBackendConfig] | type[LocalBackendConfig]] = {
    "docker": DockerBackendConfig,
    "local": LocalBackendConfig,
}
"""Every backend's config class by the name users give (`--backend NAME`)."""


def backend_config(name: str, **settings: object) -> BackendConfig:
    """The config of the backend named `name`, from whichever of `settings` it has fields for.

    One caller can hold settings for every backend (a run's config does); each backend
    takes its own and ignores the rest, so choosing one is a lookup, not an if-chain.
    """
    kind = BACKENDS.get(name)
    if kind is None:
        msg = f"unknown backend {name!r}; use {' or '.join(BACKENDS)}"
        raise PolicyError(msg)
    return kind.model_validate({k: v for k, v in settings.items() if k in kind.model_fields and k != "type"})


def build_sandbox(config: BackendConfig) -> Sandbox:
    """The backend a config names; only that backend's modules are imported."""
    return config.build()
