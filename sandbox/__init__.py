"""sandlab's executor: disposable sandboxes under policies, with structured results.

    base.py        the Sandbox seam and the Job it runs
    policy.py      resource and security policies (policies/*.yaml)
    results.py     AttemptResult, and the capped buffers behind its stdout and stderr
    events.py      the event protocol shared with the harness
    classify.py    exit code + elapsed time + OOM flag -> status
    staging.py     files in and out as tar streams, never through a symlink
    gpus.py        GPU discovery and sampling (nvidia-smi)
    limits.py      named limits with units
    errors.py, durations.py, owners.py
    backends/      the configs, what both backends share (capture), local, and docker/
    harness/       the in-sandbox side of the event protocol

What runs inside a sandbox: the harness (`sandbox/harness`, the only code of this package that
does), the task's trusted scripts (prepare, evaluate), and the generated modules and training
jobs, which are untrusted. Everything else here runs on the host, and only `backends/docker`
talks to the Docker engine.
"""

from sandbox.errors import (
    PolicyError,
    SandboxError,
    SandboxTimeoutError,
    SandboxUnavailableError,
)
from sandbox.policy import Policy, load_policy
from sandbox.results import AttemptResult, Status, Usage

__all__ = [
    "AttemptResult",
    "Policy",
    "PolicyError",
    "SandboxError",
    "SandboxTimeoutError",
    "SandboxUnavailableError",
    "Status",
    "Usage",
    "load_policy",
]
