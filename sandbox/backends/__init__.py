"""Sandbox backends, chosen by config rather than by if-chains."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.base import Sandbox


class DockerBackendConfig(BaseModel):
    """Run jobs in disposable Docker containers (the default, and the only strong isolation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["docker"] = "docker"
    image: str = "sandlab-runner:latest"
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

    def build(self) -> Sandbox:
        """Return the backend (it warns loudly on creation)."""
        from sandbox.backends.local import LocalSandbox

        return LocalSandbox(allow_weaker=self.allow_weaker)


BackendConfig = Annotated[DockerBackendConfig | LocalBackendConfig, Field(discriminator="type")]
