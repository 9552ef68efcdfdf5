"""Chores done on every node of the cluster: the doctor's rows, reaping, and the runner image.

Each is a Ray task pinned to one node (NodeAffinitySchedulingStrategy, hard) that asks for no
CPU, so it runs even on a node busy with jobs. A node that cannot answer is a failing row,
never a silent gap.

The runner image reaches nodes without a registry: `docker save` here, in chunks put in the
object store, then `docker load` on each node whose image is missing or stale (by the image's
inputs-hash label, the same check `controller images build` uses). With a registry, push and
pull as usual; nothing here is needed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.cluster.executor import NodeResources, live_nodes
from sandbox.cluster.node import node_name

CHUNK_BYTES = 64 * 1024 * 1024
"""Image bytes per object: a multi-gigabyte image never needs one object-store-sized buffer."""
NODE_TASK_TIMEOUT_S = 120.0
LOAD_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class NodeCheck:
    """One node as the doctor sees it."""

    node: str
    ok: bool
    detail: str
    fix: str = ""


def _each_node(ray: Any, func: Callable[..., Any], *args: Any, timeout_s: float) -> Iterator[tuple[NodeResources, Any]]:
    """(node, what func returned there, or the exception) for every live node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(max_retries=0, num_cpus=0)(func)
    refs = [
        (node, task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)).remote(*args))
        for node in live_nodes(ray)
    ]
    for node, ref in refs:
        try:
            yield node, ray.get(ref, timeout=timeout_s)
        except Exception as exc:  # a node that cannot answer is a row of its own
            yield node, exc


# -- node side ----------------------------------------------------------------------------------


def node_state(image: str, expected_hash: str) -> dict[str, Any]:
    """On a node: its engine and its copy of the runner image."""
    from sandbox.backends.docker import connect
    from sandbox.backends.docker.images import HASH_LABEL

    state: dict[str, Any] = {"node": node_name(), "engine": None, "image": None, "current": False}
    try:
        client = connect(timeout=10)
        state["engine"] = str(client.version().get("Version", "?"))
    except Exception as exc:
        state["error"] = f"no Docker engine: {exc}"
        return state
    try:
        found = client.images.get(image)
    except Exception:
        return state
    labels = (found.attrs.get("Config") or {}).get("Labels") or {}
    state["image"] = labels.get(HASH_LABEL) or ""
    state["current"] = state["image"] == expected_hash
    return state


def node_reap(run_id: str | None) -> dict[str, Any]:
    """On a node: remove its sandlab containers (of one run, or of any) whose owner is dead."""
    from sandbox.backends.docker import connect, reap_orphans

    report = reap_orphans(connect(timeout=10), run_id=run_id)
    return {"node": node_name(), "removed": len(report.removed), "live": report.kept_live_owner}


def node_load(image: str, expected_hash: str, chunks: list[Any]) -> dict[str, Any]:
    """On a node: `docker load` the shipped image unless its copy is current; check the hash after."""
    import ray

    before = node_state(image, expected_hash)
    if before["current"]:
        return {**before, "loaded": False}
    from sandbox.backends.docker import connect

    client = connect(timeout=60)
    with tempfile.TemporaryFile() as archive:
        for ref in chunks:
            archive.write(ray.get(ref))
        archive.seek(0)
        client.images.load(archive)
    after = node_state(image, expected_hash)
    return {**after, "loaded": True}


# -- controller side ------------------------------------------------------------------------------


def check_nodes(ray: Any, image: str, expected_hash: str) -> list[NodeCheck]:
    """A row per live node: resources, engine, and whether its runner image is current."""
    rows = []
    for node, answer in _each_node(ray, node_state, image, expected_hash, timeout_s=NODE_TASK_TIMEOUT_S):
        resources = f"{node.cpus:g} CPU, {node.memory / 2**30:.1f} GiB, {node.gpus:g} GPU" + "".join(
            f", {k} {v:g}" for k, v in sorted(node.custom.items())
        )
        where = f"node {node.address}"
        if isinstance(answer, BaseException):
            rows.append(NodeCheck(where, False, f"{resources}; did not answer ({answer})", "check the node's raylet"))
        elif answer.get("engine") is None:
            fix = "install and start Docker on the node (scripts/bootstrap.sh does), or run with --backend local"
            rows.append(NodeCheck(where, False, f"{resources}; {answer.get('error')}", fix))
        elif not answer["current"]:
            what = "missing" if answer["image"] is None else "stale"
            fix = "run `controller images build --executor ray` (or push to a registry and pull there)"
            rows.append(NodeCheck(where, False, f"{resources}; Docker {answer['engine']}; {image} {what}", fix))
        else:
            detail = f"{resources}; Docker {answer['engine']}; {image} current ({expected_hash[:12]})"
            rows.append(NodeCheck(where, True, detail))
    return rows


def reap_nodes(ray: Any, run_id: str | None = None) -> list[tuple[str, int | str]]:
    """(node, containers removed or why it could not) for every live node."""
    rows: list[tuple[str, int | str]] = []
    for node, answer in _each_node(ray, node_reap, run_id, timeout_s=NODE_TASK_TIMEOUT_S):
        rows.append((node.address, str(answer) if isinstance(answer, BaseException) else int(answer["removed"])))
    return rows


def save_chunks(ray: Any, client: Any, image: str) -> list[Any]:
    """`docker save` of the image here, as object-store chunks."""
    chunks, buffer = [], bytearray()
    for piece in client.images.get(image).save(chunk_size=CHUNK_BYTES, named=True):
        buffer.extend(piece)
        while len(buffer) >= CHUNK_BYTES:
            chunks.append(ray.put(bytes(buffer[:CHUNK_BYTES])))
            del buffer[:CHUNK_BYTES]
    if buffer:
        chunks.append(ray.put(bytes(buffer)))
    return chunks


def distribute_image(
    ray: Any, client: Any, image: str, expected_hash: str, progress: Callable[[str], None] = print
) -> list[tuple[str, str]]:
    """Get the image to every node whose copy is missing or stale; (node, what happened) each."""
    stale = [c.node for c in check_nodes(ray, image, expected_hash) if not c.ok]
    if not stale:
        return [(f"node {n.address}", "current") for n in live_nodes(ray)]
    progress(f"saving {image} to ship it to {len(stale)} node(s)")
    chunks = save_chunks(ray, client, image)
    progress(f"{len(chunks)} chunk(s) in the object store; loading on the nodes")
    outcome = []
    for node, answer in _each_node(ray, node_load, image, expected_hash, chunks, timeout_s=LOAD_TIMEOUT_S):
        if isinstance(answer, BaseException):
            outcome.append((f"node {node.address}", f"failed: {answer}"))
        elif not answer["current"]:
            outcome.append((f"node {node.address}", f"failed: loaded, but its inputs hash is {answer['image']}"))
        else:
            outcome.append((f"node {node.address}", "loaded" if answer["loaded"] else "current"))
    return outcome
