"""The one seam every backend implements, and the job it runs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sandbox.policy import Policy
from sandbox.results import AttemptResult

WORKSPACE = "/workspace"
"""Where the job's files are staged and where it runs, inside the sandbox."""


class Job(BaseModel):
    """One command to run in a fresh sandbox, with the files it needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: list[str] = Field(min_length=1)
    """argv; it runs in the workspace as the policy's user."""
    workspace: Path | None = None
    """Host folder whose contents are staged into the workspace (symlinks are not staged)."""
    files: dict[str, bytes] = Field(default_factory=dict)
    """Extra files to stage, by path relative to the workspace."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for the job (the host's environment is never inherited)."""
    outputs_dir: Path | None = None
    """Host folder the workspace is copied back into after the job; None to skip."""
    run_id: str = "adhoc"
    """Label for the container, so the reaper and `controller logs` can find it."""
    attempt: str = "0"
    """Attempt id within the run, also a label."""


class Sandbox(ABC):
    """Runs a job under a policy in an isolated, disposable environment.

    A failing job is data: `run` returns an AttemptResult whatever the job did. Only when the
    backend itself is unusable does it raise (SandboxUnavailableError).
    """

    name: str = "abstract"

    @property
    def seals_host_files(self) -> bool:
        """Whether a job cannot read host files beyond what it was given.

        "Given" means its staged workspace and the policy's data mounts. The controller keeps
        a run folder's private labels (the validation and test labels it scores against)
        owner-only on the host; metric integrity rests on no job reading them. So the
        controller refuses to run generated code on a backend that cannot seal them unless
        the user passed --allow-weaker, and says so.

        False unless a backend overrides it: a sandbox that does not say it seals, does not.
        Docker seals (a container sees no host path but those it was given). The local
        backend seals only when it runs jobs as another, unprivileged uid: then owner-only
        files are out of reach, though world-readable host files are not.
        """
        return False

    @property
    def why_not_sealed(self) -> str:
        """When `seals_host_files` is False, why, with what would fix it (one clause)."""
        return "it cannot run jobs as another user"

    @property
    def isolates_concurrent_jobs(self) -> bool:
        """Whether jobs that run at once cannot see nor touch each other.

        Each attempt's numbers must be its own: a job that could read a concurrent job's
        workspace (its weights, its predictions) or signal its processes could ensemble with
        it or sabotage it. Docker gives every job its own filesystem and pid namespace. The
        local backend runs every job as the same uid in the host's pid namespace, so with
        --parallel above 1 its numbers are not sealed. False unless a backend overrides it.
        """
        return False

    @abstractmethod
    def run(self, job: Job, policy: Policy) -> AttemptResult:
        """Run one job to completion (or to its limits) and return what happened."""

    def kill_all(self) -> int:
        """Kill every job this sandbox is running now (budget deadline, SIGINT); return count."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release whatever the backend holds (clients, pools)."""
