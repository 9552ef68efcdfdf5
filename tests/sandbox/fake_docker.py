"""A small, honest fake of the docker client: records calls, fails where told to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class FakeAPIError(Exception):
    """Stands in for docker.errors.APIError."""


@dataclass
class FakeContainer:
    id: str
    kwargs: dict[str, Any]
    started: bool = False

    def start(self) -> None:
        self.started = True


@dataclass
class FakeAPI:
    removed: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    fail_exec: bool = False
    fail_create: bool = False

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        return dict(kwargs)

    def create_container(self, **kwargs: Any) -> dict[str, str]:
        if self.fail_create:
            raise FakeAPIError("no such image")
        self.created.append(kwargs)
        return {"Id": f"c{len(self.created) - 1}"}

    def start(self, container_id: str) -> None:
        self.started.append(container_id)

    def exec_create(self, container_id: str, cmd: list[str], **kwargs: Any) -> dict[str, str]:
        if self.fail_exec:
            raise FakeAPIError("engine went away")
        return {"Id": "exec1"}

    def remove_container(self, container_id: str, **kwargs: Any) -> None:
        self.removed.append(container_id)

    def kill(self, container_id: str) -> None:
        self.killed.append(container_id)


@dataclass
class FakeContainers:
    created: list[FakeContainer] = field(default_factory=list)
    fail_create: bool = False

    def create(self, **kwargs: Any) -> FakeContainer:
        if self.fail_create:
            raise FakeAPIError("no such image")
        container = FakeContainer(id=f"c{len(self.created)}", kwargs=kwargs)
        self.created.append(container)
        return container


@dataclass
class FakeDockerClient:
    containers: FakeContainers = field(default_factory=FakeContainers)
    api: FakeAPI = field(default_factory=FakeAPI)
