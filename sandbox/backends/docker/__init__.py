"""The docker backend: everything in sandlab that talks to a Docker engine.

    sandbox.py    DockerSandbox: one disposable, locked-down container per attempt
    container.py  the container's shape and the scripts run in it (pure, unit-tested)
    engine.py     connecting to the engine, with an error that says what to do
    labels.py     the labels that tie a container to its owner process
    reaper.py     removing containers whose owner is gone
    pool.py       warm containers with torch already imported
    images.py     building sandlab-runner and sandlab-controller, online or air-gapped
    health.py     the engine, image and real-container checks of `controller doctor`

This package's public names, below, are what the controller's command line uses; the
controller's core never imports this package (it receives a Sandbox by injection, built
from `sandbox.backends.BackendConfig`).
"""

from sandbox.backends.docker.engine import connect, docker_host
from sandbox.backends.docker.health import (
    ContainerCheck,
    EngineHealth,
    check_container,
    check_engine,
    check_images,
)
from sandbox.backends.docker.images import CONTROLLER, RUNNER, ImageSpec, ImageState, build_all, image_state
from sandbox.backends.docker.reaper import ReapReport, owner_is_alive, reap_orphans
from sandbox.backends.docker.sandbox import DockerSandbox

__all__ = [
    "CONTROLLER",
    "RUNNER",
    "ContainerCheck",
    "DockerSandbox",
    "EngineHealth",
    "ImageSpec",
    "ImageState",
    "ReapReport",
    "build_all",
    "check_container",
    "check_engine",
    "check_images",
    "connect",
    "docker_host",
    "image_state",
    "owner_is_alive",
    "reap_orphans",
]
