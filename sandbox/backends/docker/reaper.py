"""Removing sandlab containers whose owner process is gone.

Two runs may share a host, so a container is removed only when its owner is provably dead:
same host, and either no process with that pid or one that started at another time (a
recycled pid). Containers owned by another host are never touched.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import structlog
from docker.errors import NotFound

from sandbox import owners
from sandbox.backends.docker import labels
from sandbox.backends.docker.engine import engine_error_text

log = structlog.get_logger("sandlab.sandbox")


@dataclass(frozen=True)
class ReapReport:
    """What the reaper saw and did."""

    removed: list[str]
    kept_live_owner: int
    kept_other_host: int
    failed: list[str] = field(default_factory=list)
    """Orphans the engine refused to remove (each logged as `reaper.remove_failed`)."""


def owner_is_alive(container_labels: dict[str, str]) -> bool:
    """Whether the process that created the container still runs (on this host)."""
    pid_text = container_labels.get(labels.OWNER_PID, "")
    return owners.owner_is_alive(
        container_labels.get(labels.OWNER_HOST),
        int(pid_text) if pid_text.isdigit() else None,
        container_labels.get(labels.OWNER_START) or None,
    )


def reap_orphans(client: Any, *, run_id: str | None = None) -> ReapReport:
    """Remove labelled containers of dead owners on this host; return what happened."""
    filters = {"label": [labels.ATTEMPT]}
    if run_id is not None:
        filters["label"].append(f"{labels.RUN}={run_id}")
    host = socket.gethostname()
    removed: list[str] = []
    failed: list[str] = []
    live = other = 0
    for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
        container_labels = container.labels or {}
        if container_labels.get(labels.OWNER_HOST) != host:
            other += 1
            continue
        if owner_is_alive(container_labels):
            live += 1
            continue
        try:
            container.remove(force=True, v=True)
        except NotFound:
            # Gone between the listing and now (its owner's own `finally`, say): fine.
            log.debug("reaper.already_gone", container_id=container.short_id)
            continue
        except Exception as exc:
            log.warning("reaper.remove_failed", container_id=container.short_id, reason=engine_error_text(exc))
            failed.append(container.short_id)
            continue
        removed.append(container.short_id)
    return ReapReport(removed=removed, kept_live_owner=live, kept_other_host=other, failed=failed)
