"""What `controller doctor` asks of the docker backend: is the engine there, are the images
current, and does a real container start under the default policy.

Each check returns data and never raises: the doctor turns it into a table row with a fix.
The engine handle travels inside `EngineHealth`, so callers never touch a docker client.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from sandbox.backends.docker.engine import connect, docker_host, engine_error_text
from sandbox.backends.docker.images import CONTROLLER, RUNNER, ImageSpec, ImageState, image_state
from sandbox.backends.docker.sandbox import DockerSandbox
from sandbox.base import Job
from sandbox.errors import SandboxError
from sandbox.policy import load_policy

log = structlog.get_logger("sandlab.sandbox")

PROBE_COMMAND = ["python3", "-c", "import os; print(os.getuid())"]
"""The container check's job: it prints the uid the job runs as (must not be 0)."""


@dataclass(frozen=True)
class EngineHealth:
    """The engine as `controller doctor` sees it."""

    address: str
    """$DOCKER_HOST or the default socket."""
    error: str | None = None
    """Why the engine could not be reached (with what to do); None when it answered."""
    version: str = "?"
    root_dir: str | None = None
    """Where the engine keeps images (DockerRootDir); None when its info was unavailable."""
    runtimes: frozenset[str] | None = None
    """Runtimes registered with the engine; None when its info was unavailable."""
    has_cdi: bool = False
    """Whether the engine has CDI spec dirs (another way to expose NVIDIA GPUs)."""
    client: Any = field(default=None, repr=False, compare=False)

    @property
    def reachable(self) -> bool:
        """Whether the engine answered a ping."""
        return self.error is None

    @property
    def gpu_runtime(self) -> bool | None:
        """Whether the engine can hand NVIDIA GPUs to containers; None when it cannot be told."""
        if self.runtimes is None:
            return None
        return "nvidia" in self.runtimes or self.has_cdi


@dataclass(frozen=True)
class ContainerCheck:
    """The outcome of starting one real container under a policy."""

    ok: bool
    """It ran, exited 0 and printed a non-root uid."""
    detail: str
    uid: str | None = None
    duration_s: float | None = None
    machinery_failed: bool = False
    """True when the sandbox itself raised (engine or image), not when the job failed."""


def check_engine(timeout: int | None = None) -> EngineHealth:
    """Connect, then read the engine's version and info; never raises."""
    address = docker_host()
    try:
        client = connect() if timeout is None else connect(timeout=timeout)
    except SandboxError as exc:
        return EngineHealth(address=address, error=str(exc))
    version = "?"
    try:
        version = str(client.version().get("Version", "?"))
    except Exception as exc:
        log.warning("health.version_failed", reason=engine_error_text(exc))
    try:
        info = client.info()
    except Exception as exc:
        log.warning("health.info_failed", reason=engine_error_text(exc))
        return EngineHealth(address=address, version=version, client=client)
    return EngineHealth(
        address=address,
        version=version,
        root_dir=info.get("DockerRootDir"),
        runtimes=frozenset((info.get("Runtimes") or {}).keys()),
        has_cdi=bool(info.get("CDISpecDirs")),
        client=client,
    )


def check_images(engine: EngineHealth, *, with_controller: bool = True) -> list[ImageState]:
    """The runner image's state (and the controller's): missing, stale, current or unknown."""
    specs: list[ImageSpec] = [RUNNER, CONTROLLER] if with_controller else [RUNNER]
    if not engine.reachable:
        states = [_unknown(spec, engine.error or "engine unreachable") for spec in specs]
    else:
        states = [image_state(engine.client, spec) for spec in specs]
    return [replace(state, required=spec is not CONTROLLER) for spec, state in zip(specs, states, strict=True)]


def _unknown(spec: ImageSpec, error: str) -> ImageState:
    return ImageState(spec.tag, False, False, spec.inputs_hash(), None, None, error=error)


def check_container(engine: EngineHealth, policy_name: str = "default") -> ContainerCheck:
    """Start a real container under the policy and run `PROBE_COMMAND` in it; never raises."""
    if not engine.reachable:
        return ContainerCheck(False, engine.error or "engine unreachable", machinery_failed=True)
    try:
        policy = load_policy(policy_name)
        result = DockerSandbox(client=engine.client).run(Job(command=PROBE_COMMAND, run_id="doctor"), policy)
    except SandboxError as exc:
        return ContainerCheck(False, str(exc), machinery_failed=True)
    uid = result.stdout.strip()
    if result.ok and uid not in {"", "0"}:
        detail = f"started under policy {policy_name!r} as uid {uid} in {result.duration_s:.1f}s"
        return ContainerCheck(True, detail, uid=uid, duration_s=result.duration_s)
    return ContainerCheck(False, f"{result.status}: {result.reason}", uid=uid or None, duration_s=result.duration_s)
