"""sandlab's executor: disposable containers under policies, with structured results.

The harness subpackage is the only code of this repository that runs inside a container;
everything else here runs on the host.
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
