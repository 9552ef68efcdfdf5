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
    fail_start: bool = False
    fail_remove: Exception | None = None
    fail_kill: Exception | None = None
    fail_inspect_image: Exception | None = None

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        return dict(kwargs)

    def create_container(self, **kwargs: Any) -> dict[str, str]:
        if self.fail_create:
            raise FakeAPIError("no such image")
        self.created.append(kwargs)
        return {"Id": f"c{len(self.created) - 1}"}

    def start(self, container_id: str) -> None:
        if self.fail_start:
            raise FakeAPIError("cannot start: no such runtime")
        self.started.append(container_id)

    def exec_create(self, container_id: str, cmd: list[str], **kwargs: Any) -> dict[str, str]:
        if self.fail_exec:
            raise FakeAPIError("engine went away")
        return {"Id": "exec1"}

    def remove_container(self, container_id: str, **kwargs: Any) -> None:
        if self.fail_remove is not None:
            raise self.fail_remove
        self.removed.append(container_id)

    def kill(self, container_id: str) -> None:
        if self.fail_kill is not None:
            raise self.fail_kill
        self.killed.append(container_id)

    def inspect_image(self, image: str) -> dict[str, str]:
        if self.fail_inspect_image is not None:
            raise self.fail_inspect_image
        return {"Id": "sha256:feed"}


@dataclass
class FakeContainers:
    created: list[FakeContainer] = field(default_factory=list)
    fail_create: bool = False
    listed: list[FakeListedContainer] = field(default_factory=list)
    vanished: int = 0
    """How many containers the engine listed but removed before the SDK inspected each one."""

    def list(self, *, ignore_removed: bool = False, **kwargs: Any) -> list[FakeListedContainer]:
        from docker.errors import NotFound

        # docker-py lists ids, then inspects each: one removed in between raises NotFound
        # unless ignore_removed is set.
        if self.vanished and not ignore_removed:
            raise NotFound("No such container")
        return list(self.listed)

    def create(self, **kwargs: Any) -> FakeContainer:
        if self.fail_create:
            raise FakeAPIError("no such image")
        container = FakeContainer(id=f"c{len(self.created)}", kwargs=kwargs)
        self.created.append(container)
        return container


@dataclass
class FakeImage:
    attrs: dict[str, Any]


@dataclass
class FakeImages:
    """`client.images`: known tags, or an error every lookup raises (an engine in trouble)."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    """Tag -> its labels."""
    fail: Exception | None = None

    def get(self, tag: str) -> FakeImage:
        from docker.errors import ImageNotFound

        if self.fail is not None:
            raise self.fail
        if tag not in self.tags:
            raise ImageNotFound(f"No such image: {tag}")
        return FakeImage(attrs={"Config": {"Labels": self.tags[tag]}})


@dataclass
class FakeListedContainer:
    """A container as `containers.list` returns it, for the reaper."""

    short_id: str
    labels: dict[str, str]
    fail_remove: Exception | None = None
    removed: bool = False

    def remove(self, **kwargs: Any) -> None:
        if self.fail_remove is not None:
            raise self.fail_remove
        self.removed = True


@dataclass
class FakeDockerClient:
    containers: FakeContainers = field(default_factory=FakeContainers)
    api: FakeAPI = field(default_factory=FakeAPI)
    images: FakeImages = field(default_factory=FakeImages)
