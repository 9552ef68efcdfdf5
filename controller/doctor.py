"""`controller doctor`: one row per check, each failing row with its fix."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from controller.paper.latex import INSTALL_FIX, latex_available
from sandbox.backends.docker import EngineHealth, check_container, check_engine, check_images
from sandbox.gpus import detect_gpus
from sandbox.limits import GiB, min_free_disk_bytes

AGENT_PROBE_TIMEOUT_S = 5
DEFAULT_DOCKER_ROOT = "/var/lib/docker"


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
    engine = check_engine()
    if not engine.reachable:
        checks.append(Check("engine", "fail", engine.error or "", "start dockerd (`make run` does) or set DOCKER_HOST"))
    else:
        checks.append(Check("engine", "ok", f"Docker {engine.version} at {engine.address}"))
        checks.extend(image_checks(engine, with_controller_image))
        checks.append(_container_check(engine))
        checks.append(_disk_check(engine))
        checks.append(_gpu_runtime_check(engine))
    checks.append(_gpu_host_check())
    checks.append(_agent_check(agent, base_url))
    checks.append(latex_check())
    return checks


def cluster_checks(address: str | None) -> list[Check]:
    """`doctor --executor ray`: the cluster, then a row per node (resources, engine, runner image)."""
    from sandbox.backends.docker import RUNNER
    from sandbox.cluster import connect
    from sandbox.cluster.admin import check_nodes
    from sandbox.errors import SandboxUnavailableError

    try:
        ray = connect(address)
    except SandboxUnavailableError as exc:
        return [Check("ray cluster", "fail", str(exc), "start one with `ray start --head`, or fix --ray-address")]
    try:
        nodes = check_nodes(ray, RUNNER.tag, RUNNER.inputs_hash())
        checks = [Check("ray cluster", "ok", f"Ray {ray.__version__}, {len(nodes)} live node(s)")]
        checks += [Check(n.node, "ok" if n.ok else "fail", n.detail, n.fix) for n in nodes]
    finally:
        ray.shutdown()
    return checks


def image_checks(engine: EngineHealth, with_controller_image: bool) -> list[Check]:
    rows = []
    for state in check_images(engine, with_controller=with_controller_image):
        name = f"image {state.tag}"
        if state.error is not None:
            rows.append(Check(name, "fail", f"cannot look it up: {state.error}", "see the engine row; then rerun"))
        elif state.current:
            rows.append(Check(name, "ok", f"current (inputs {state.expected_hash[:12]})"))
        else:
            # The controller's own image only runs the controller in a container: a native
            # user's runs do not need it, so it warns instead of failing the doctor.
            level = "fail" if state.required else "warn"
            why = "present but stale" if state.present else "missing"
            why += "" if state.required else " (only needed to run the controller in a container)"
            rows.append(Check(name, level, why, "run `controller images build`"))
    return rows


def _container_check(engine: EngineHealth) -> Check:
    probe = check_container(engine)
    if probe.ok:
        return Check("sandbox container", "ok", probe.detail)
    if probe.machinery_failed:
        return Check("sandbox container", "fail", probe.detail, "see the engine and image rows")
    return Check("sandbox container", "fail", probe.detail, "run `controller images build`")


def _disk_check(engine: EngineHealth) -> Check:
    root = engine.root_dir or DEFAULT_DOCKER_ROOT
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


def _gpu_runtime_check(engine: EngineHealth) -> Check:
    if engine.gpu_runtime is None:
        return Check("GPU runtime", "info", "engine info unavailable")
    if engine.gpu_runtime:
        return Check("GPU runtime", "ok", "nvidia runtime registered with the engine")
    detail = "no nvidia runtime in the engine (GPU policies will fail)"
    if detect_gpus():
        return Check(
            "GPU runtime", "fail", detail, "install the NVIDIA container toolkit and run `nvidia-ctk runtime configure`"
        )
    return Check("GPU runtime", "info", detail + "; none needed without GPUs")


def latex_check() -> Check:
    """Preflight for the paper's PDF; without LaTeX the Markdown paper and the dashboard still appear."""
    ok, detail = latex_available()
    if ok:
        return Check("LaTeX (paper PDF)", "ok", detail)
    return Check(
        "LaTeX (paper PDF)",
        "warn",
        f"{detail}; no main.pdf (the Markdown paper and the dashboard are written anyway)",
        INSTALL_FIX,
    )


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
