"""`controller doctor`: one row per check, each failing row with its fix."""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sandbox.base import Job
from sandbox.engine import connect, docker_host
from sandbox.errors import SandboxError
from sandbox.gpus import detect_gpus
from sandbox.images import CONTROLLER, RUNNER, image_state
from sandbox.limits import GiB, min_free_disk_bytes
from sandbox.policy import load_policy

AGENT_PROBE_TIMEOUT_S = 5


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    name: str
    status: str
    """ok, fail, warn, or info (reported, never a failure)."""
    detail: str
    fix: str = ""


def run_checks(
    *, agent: str = "offline", base_url: str | None = None, with_controller_image: bool = True
) -> list[Check]:
    """Run every check; never raises."""
    checks: list[Check] = []
    try:
        client = connect()
    except SandboxError as exc:
        checks.append(Check("engine", "fail", str(exc), "start dockerd (`make run` does) or set DOCKER_HOST"))
        client = None
    else:
        version = client.version().get("Version", "?")
        checks.append(Check("engine", "ok", f"Docker {version} at {docker_host()}"))
    if client is not None:
        specs = [RUNNER, CONTROLLER] if with_controller_image else [RUNNER]
        for spec in specs:
            state = image_state(client, spec)
            if state.current:
                checks.append(Check(f"image {spec.tag}", "ok", f"current (inputs {state.expected_hash[:12]})"))
            elif state.present:
                checks.append(Check(f"image {spec.tag}", "fail", "present but stale", "run `controller images build`"))
            else:
                checks.append(Check(f"image {spec.tag}", "fail", "missing", "run `controller images build`"))
        checks.append(_container_check(client))
        checks.append(_disk_check(client))
        checks.append(_gpu_runtime_check(client))
    checks.append(_gpu_host_check())
    checks.append(_agent_check(agent, base_url))
    return checks


def _container_check(client: object) -> Check:
    from sandbox.backends.docker import DockerSandbox

    try:
        policy = load_policy("default")
        result = DockerSandbox(client=client).run(
            Job(command=["python3", "-c", "import os; print(os.getuid())"], run_id="doctor"), policy
        )
    except SandboxError as exc:
        return Check("sandbox container", "fail", str(exc), "see the engine and image rows")
    if result.ok and result.stdout.strip() not in {"", "0"}:
        return Check(
            "sandbox container",
            "ok",
            f"started under policy 'default' as uid {result.stdout.strip()} in {result.duration_s:.1f}s",
        )
    return Check("sandbox container", "fail", f"{result.status}: {result.reason}", "run `controller images build`")


def _disk_check(client: object) -> Check:
    root = "/var/lib/docker"
    with contextlib.suppress(Exception):
        root = client.info().get("DockerRootDir", root)  # type: ignore[attr-defined]
    probe = Path(root) if Path(root).exists() else Path.cwd()
    free = shutil.disk_usage(probe).free
    detail = f"{free / GiB:.0f} GiB free at {probe}"
    if free < min_free_disk_bytes:
        return Check(
            "free disk", "warn", detail, f"free space: images and runs need about {min_free_disk_bytes // GiB} GiB"
        )
    return Check("free disk", "ok", detail)


def _gpu_host_check() -> Check:
    gpus = detect_gpus()
    if not gpus:
        return Check(
            "GPUs (host)", "info", "no NVIDIA GPU visible (nvidia-smi absent or none found); CPU policies only"
        )
    names = ", ".join(f"{g.index}: {g.name} ({g.memory_total_mib} MiB)" for g in gpus)
    return Check("GPUs (host)", "ok", f"{len(gpus)} visible, driver {gpus[0].driver}: {names}")


def _gpu_runtime_check(client: object) -> Check:
    try:
        info = client.info()  # type: ignore[attr-defined]
    except Exception:
        return Check("GPU runtime", "info", "engine info unavailable")
    runtimes = set((info.get("Runtimes") or {}).keys())
    has_cdi = bool(info.get("CDISpecDirs"))
    if "nvidia" in runtimes or has_cdi:
        return Check("GPU runtime", "ok", "nvidia runtime registered with the engine")
    detail = "no nvidia runtime in the engine (GPU policies will fail)"
    if detect_gpus():
        return Check(
            "GPU runtime", "fail", detail, "install the NVIDIA container toolkit and run `nvidia-ctk runtime configure`"
        )
    return Check("GPU runtime", "info", detail + "; none needed without GPUs")


def _agent_check(agent: str, base_url: str | None) -> Check:
    if agent == "offline":
        return Check("agent", "ok", "offline (deterministic templates, no LLM needed)")
    url = base_url or os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
    request = urllib.request.Request(  # noqa: S310 - the user's configured endpoint
        url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=AGENT_PROBE_TIMEOUT_S) as response:  # noqa: S310
            code = response.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (OSError, ValueError) as exc:
        return Check(
            "agent",
            "fail",
            f"llm endpoint {url} unreachable ({type(exc).__name__})",
            "set OPENAI_BASE_URL to a reachable OpenAI-compatible server, or use --agent offline",
        )
    if code >= 500:
        return Check("agent", "fail", f"llm endpoint {url} answered {code}", "check the server")
    return Check("agent", "ok", f"llm endpoint {url} reachable (HTTP {code})")
