"""Running attempts on a Ray cluster: the same sandbox, policies and results on every node.

    executor.py   RaySandbox: each attempt a Ray task that asks for its policy's resources
    node.py       what a node runs in its Ray worker: the attempt, through its own backend
    shipping.py   data mounts as bytes through the object store, cached per node by hash
    watchdog.py   removes a dead worker's containers on its node
    admin.py      every-node chores: doctor rows, reaping, loading the runner image

Nothing here imports ray at module level: it is an optional extra (`sandlab[ray]`), imported
only when a run asks for `--executor ray`.
"""

from sandbox.cluster.executor import Capacity, NodeResources, RaySandbox, connect, live_nodes

__all__ = ["Capacity", "NodeResources", "RaySandbox", "connect", "live_nodes"]
