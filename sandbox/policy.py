"""Resource and security policies: frozen pydantic models loaded from `policies/*.yaml`.

Everything is denied unless a policy grants it: no network, a read-only root filesystem,
no capabilities, a non-root user, and hard caps on memory, processes, output and disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from sandbox.durations import parse_duration
from sandbox.errors import PolicyError
from sandbox.limits import GiB, MiB, max_output_bytes

Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A duration in seconds; YAML may say `90s`, `15m` or `1h30m`."""

POLICIES_ENV = "SANDLAB_POLICIES_DIR"


class DataMount(BaseModel):
    """A dataset made visible to the job, always read-only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    """Absolute host path (type `bind`) or a named volume (type `volume`)."""
    target: str
    """Absolute path inside the container, e.g. `/data/cifar10`."""
    type: Literal["bind", "volume"] = "bind"
    """`bind` for a host directory, `volume` for a named Docker volume."""

    @field_validator("target")
    @classmethod
    def _target_is_absolute_and_outside_workspace(cls, value: str) -> str:
        if not value.startswith("/"):
            msg = "must be an absolute path such as /data/name"
            raise ValueError(msg)
        if ".." in value.split("/"):
            msg = f"{value} must not contain '..'; mount datasets under /data"
            raise ValueError(msg)
        if value.rstrip("/") in {"", "/workspace", "/tmp", "/proc", "/sys", "/dev"}:
            msg = f"{value} is reserved; mount datasets under /data"
            raise ValueError(msg)
        return value


class Policy(BaseModel):
    """Limits and isolation settings for one disposable container."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    """Name shown in results and logs; defaults to the file's stem."""
    cpus: float = Field(default=1.0, gt=0)
    """CPU cores the job may use (Docker nano_cpus)."""
    memory: ByteSize = ByteSize(2 * GiB)
    """Hard memory limit; swap is pinned to it so an overrun is reported as OOM, not swapped."""
    pids: int = Field(default=256, ge=16)
    """Maximum number of processes and threads; stops fork bombs."""
    gpus: int | list[int] = 0
    """A number of GPUs, or explicit device ids such as [0, 2]. 0 means no GPU."""
    shm_size: ByteSize = ByteSize(64 * MiB)
    """Size of /dev/shm (PyTorch data loaders with workers need more than the default)."""
    timeout: Seconds = 60.0
    """Wall-clock limit for the job, enforced inside (timeout -k) and again by the host."""
    kill_grace: Seconds = 5.0
    """Seconds between SIGTERM and SIGKILL when the timeout fires."""
    network: Literal["none", "bridge"] = "none"
    """`none` (no interface but loopback) unless a policy explicitly needs a network."""
    read_only_rootfs: bool = True
    """Mount the image read-only; only /tmp and /workspace are writable."""
    tmpfs_size: ByteSize = ByteSize(256 * MiB)
    """Size cap of the tmpfs mounted at /tmp."""
    user: str = "1000:1000"
    """uid:gid the job runs as; root is refused."""
    output_cap: ByteSize = ByteSize(max_output_bytes)
    """Bytes kept of each of stdout and stderr (head and tail); the rest is dropped."""
    workspace_size: ByteSize = ByteSize(512 * MiB)
    """Size cap of the tmpfs workspace; a runaway writer hits ENOSPC, not the host disk."""
    data_mounts: tuple[DataMount, ...] = ()
    """Read-only datasets: host paths or named volumes. The local backend stages read-only
    copies of host paths instead; jobs find a target T at `$SANDLAB_MOUNT_PREFIX` + T."""

    @field_validator("user")
    @classmethod
    def _user_is_not_root(cls, value: str) -> str:
        uid = value.split(":", 1)[0]
        if uid in {"0", "root"}:
            msg = "root is not allowed; use an unprivileged uid:gid such as 1000:1000"
            raise ValueError(msg)
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus_are_sane(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int) and value < 0:
            msg = "must be a count >= 0 or a list of device ids"
            raise ValueError(msg)
        if isinstance(value, list) and (len(set(value)) != len(value) or min(value, default=0) < 0):
            msg = "device ids must be distinct and >= 0"
            raise ValueError(msg)
        return value

    @property
    def gpu_count(self) -> int:
        """How many GPUs the policy asks for."""
        return len(self.gpus) if isinstance(self.gpus, list) else self.gpus

    @property
    def host_deadline_s(self) -> float:
        """When the host kills the container itself: after the in-container timeout had its go."""
        from sandbox.limits import host_kill_slack_s

        return self.timeout + self.kill_grace + host_kill_slack_s

    def with_overrides(self, **changes: object) -> Policy:
        """A validated copy with some fields changed (e.g. a CLI `--timeout`)."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        return Policy.model_validate(data)


def policies_dir() -> Path:
    """Where named policies live: $SANDLAB_POLICIES_DIR, else the repository's `policies/`."""
    env = os.environ.get(POLICIES_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "policies"


def available_policies() -> list[str]:
    """Names of the policies in `policies_dir()`."""
    return sorted(p.stem for p in policies_dir().glob("*.yaml"))


def load_policy(name_or_path: str | Path) -> Policy:
    """Load a policy by name (`default`, `train`, ...) or by path to a YAML file."""
    text = str(name_or_path)
    candidate = Path(text)
    looks_like_path = candidate.suffix in {".yaml", ".yml"} or os.sep in text
    path = candidate if looks_like_path else policies_dir() / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(available_policies()) or "none found"
        msg = f"policy {text!r} not found ({path}); use one of: {known}, or a path to a YAML file"
        raise PolicyError(msg)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        msg = f"{path}:{where} is not valid YAML; fix the syntax"
        raise PolicyError(msg) from None
    if not isinstance(raw, dict):
        msg = f"{path}: expected a mapping of policy fields at the top level"
        raise PolicyError(msg)
    raw.setdefault("name", path.stem)
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = f"{path}: field {field!r}: {err['msg']}{more}"
        raise PolicyError(msg) from None
