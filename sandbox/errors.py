"""One root exception for the package; each subclass also inherits the builtin it resembles.

A job that fails is data (an AttemptResult), never an exception. Only a failure of the
machinery raises.
"""


class SandboxError(Exception):
    """Root of every error raised by the sandbox package."""


class SandboxUnavailableError(SandboxError, ConnectionError):
    """The backend (usually the Docker engine) cannot be reached or used."""


class SandboxTimeoutError(SandboxError, TimeoutError):
    """The machinery itself (not the job) did not answer in time."""


class PolicyError(SandboxError, ValueError):
    """A policy file or name is invalid; the message names the file and the field."""


class ImageBuildError(SandboxError, RuntimeError):
    """An image could not be built; the message says which step failed."""


class WeakerIsolationError(SandboxError, PermissionError):
    """The backend cannot honour the policy and weaker isolation was not allowed."""
