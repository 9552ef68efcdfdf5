"""The one way a job runs: `AttemptRunner.execute(spec)`, memoized by the spec's key.

On resume the loop runs again from the top; finished attempts are read back instead of
rerun, and a deterministic agent (or the LLM cache) makes the same decisions. What was
running when the controller died runs again; nothing that finished is lost or repeated.

An attempt is `ok` only when the sandbox says the command exited 0 AND the trusted harness
said it finished AND every output the next stage needs is a regular file of a size that
stage can take. Anything else is the code's failure (`error`, with a reason such as
`missing_weights`), which goes to repair like any other; no attempt can end the run.
Only the machinery's failures (`infra_error`) are retried.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from controller.errors import BudgetExceededError, ControllerError
from controller.ledger import Ledger
from controller.plan import Arm, ModuleCode
from controller.registry import AttemptKind, AttemptRecord, RunState
from controller.scheduler import ResourcePool
from controller.store import RunStore
from sandbox.base import Job, Sandbox
from sandbox.events import FinishedEvent, StageEvent
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Status

Progress = Callable[[str], None]
Scorer = Callable[[AttemptResult, Path], dict[str, Any]]
INFRA_RETRIES = 2
"""Times a job is retried after an infra_error (never after a failure of the code)."""
INFRA_RETRY_PAUSE_S = 2.0
MEASURED_MARGIN = 3.0
"""Once jobs of a kind have run, the least time one is admitted with is this many times the
slowest of them (below the task's min_timeout, never below MIN_TIMEOUT_FLOOR_S)."""
MIN_TIMEOUT_FLOOR_S = 5.0


class InterruptedRunError(ControllerError):
    """SIGINT/SIGTERM: containers were killed; the run is left resumable."""


class StopRequestedError(ControllerError):
    """`controller stop` asked for a graceful stop."""


def harness(*args: str) -> list[str]:
    """argv for the in-container harness (`python3 -m sandbox.harness ...`)."""
    return ["python3", "-m", "sandbox.harness", *args]


@dataclass(frozen=True)
class JobSpec:
    """One piece of work: what to run, under which policy, and what it must leave behind."""

    key: str
    """Deterministic identity (see controller.store's key functions): resume never reruns a key."""
    kind: AttemptKind
    policy: Policy
    timeout_s: float
    command: list[str]
    files: dict[str, bytes]
    slot: str | None = None
    module: ModuleCode | None = None
    arm: Arm | None = None
    seed: int | None = None
    keep_outputs: bool = False
    required_outputs: dict[str, str] = field(default_factory=dict)
    """Output path (relative to the outputs folder) -> the failure reason if it is missing."""
    max_output_bytes: int | None = None
    """The largest output the next stage can take (its workspace); larger fails the attempt."""
    follow_up_s: float = 0.0
    """Seconds kept free for the job that must follow (a training job's evaluation)."""
    final: bool = False
    """The report's own job: may use the reserve, runs after a stop request."""
    scorer: Scorer | None = None
    """Host-side verdict on a finished job (e.g. scoring predictions): fields for the record."""


class AttemptRunner:
    """Runs JobSpecs in the sandbox, records them in the store, charges them to the ledger."""

    def __init__(
        self,
        store: RunStore,
        state: RunState,
        sandbox: Sandbox,
        ledger: Ledger,
        *,
        min_timeout_s: float,
        progress: Progress = print,
        resources: ResourcePool | None = None,
    ) -> None:
        self.store, self.state, self.sandbox, self.ledger = store, state, sandbox, ledger
        self.min_timeout_s = min_timeout_s
        self.progress = progress
        self.resources = resources
        self.index = store.attempt_index()
        self.iteration = 0
        self.log = structlog.get_logger("sandlab.attempts").bind(run_id=state.run_id)
        self.interrupted = threading.Event()
        self.deadline = threading.Event()
        self.lock = threading.RLock()
        self._next_number = 0

    # -- control from other threads -----------------------------------------------------

    def interrupt(self) -> None:
        """SIGINT/SIGTERM: kill running containers; the loop unwinds as `interrupted`."""
        self.interrupted.set()
        self.sandbox.kill_all()

    def deadline_reached(self) -> None:
        self.deadline.set()
        killed = self.sandbox.kill_all()
        self.log.warning("budget.deadline", killed_containers=killed)

    def checkpoint(self) -> None:
        """For work between jobs (the research front-end): unwind on an interrupt, a stop
        request or the deadline, as a job would."""
        if self.interrupted.is_set():
            raise InterruptedRunError
        if self.store.stop_requested():
            raise StopRequestedError
        if self.deadline.is_set():
            msg = "wall-clock budget spent"
            raise BudgetExceededError(msg)

    def save(self) -> None:
        """run.json, with the wall clock brought up to date."""
        self.ledger.sync()
        self.store.save_state(self.state)

    def min_timeout(self, kind: str) -> float:
        """The least time a job of this kind is admitted with: the task's min_timeout until two
        of its kind finished ok, then MEASURED_MARGIN x the slowest of them if that is less.
        A short run then uses its last minute: 4-second jobs never needed 30-second floors."""
        with self.lock:
            done = [r.result.duration_s for r in self.index.values() if r.kind == kind and r.status == "ok"]
        if len(done) < 2:
            return self.min_timeout_s
        return min(self.min_timeout_s, max(MIN_TIMEOUT_FLOOR_S, MEASURED_MARGIN * max(done)))

    # -- the one way jobs run ---------------------------------------------------------------

    def execute(self, spec: JobSpec) -> AttemptRecord:
        """Run a job in the sandbox, or return its recorded attempt if it already finished.

        Thread-safe: bookkeeping happens under the lock, the job itself outside it.
        """
        with self.lock:
            done = self.index.get(spec.key)
            if done is not None:
                return done
            if self.interrupted.is_set():
                raise InterruptedRunError
            if self.store.stop_requested() and not spec.final:
                raise StopRequestedError
            self.ledger.check_cost()
            if not spec.final:
                self.ledger.check_iteration()
                self.ledger.reserve_attempt()
            clipped = self.ledger.admit(
                spec.timeout_s, self.min_timeout(spec.kind), follow_up_s=spec.follow_up_s, final=spec.final
            )
            self._next_number = max(self._next_number, self.store.next_attempt_number())
            number = self._next_number
            self._next_number += 1
        what = spec.slot or (spec.arm.name if spec.arm else "")
        seed = "" if spec.seed is None else f" seed {spec.seed}"
        self.progress(f"  [{number:04d}] {spec.kind} {what}{seed} ...")
        staging, result = self._run_with_retries(spec, number, spec.policy.with_overrides(timeout=clipped))
        with self.lock:
            return self._record(spec, number, staging, result)

    def _run_with_retries(self, spec: JobSpec, number: int, policy: Policy) -> tuple[Path, AttemptResult]:
        for retry in range(INFRA_RETRIES + 1):
            staging = self.store.staging_dir(number)
            job = Job(
                command=spec.command,
                files=spec.files,
                outputs_dir=staging / "outputs",
                run_id=self.state.run_id,
                attempt=f"{number:04d}",
            )
            with self._hold(policy) as granted:
                result = self.sandbox.run(job, granted)
            if self.interrupted.is_set():
                shutil.rmtree(staging, ignore_errors=True)
                raise InterruptedRunError
            if result.status != Status.infra_error or retry == INFRA_RETRIES or self.deadline.is_set():
                break
            self.log.warning("attempt.infra_retry", attempt=number, retry=retry + 1, reason=result.reason)
            self.progress(f"  [{number:04d}] infrastructure failure ({result.reason}); retrying")
            time.sleep(INFRA_RETRY_PAUSE_S * (retry + 1))
        return staging, result

    @contextmanager
    def _hold(self, policy: Policy) -> Iterator[Policy]:
        with self.resources.hold(policy) if self.resources is not None else nullcontext(policy) as granted:
            yield granted

    def _record(self, spec: JobSpec, number: int, staging: Path, result: AttemptResult) -> AttemptRecord:
        outputs = staging / "outputs"
        status, reason = str(result.status), result.reason
        extra: dict[str, Any] = {}
        failure = check_outputs(spec, result, outputs) if result.ok else None
        if failure is not None:
            status, reason = "error", failure
        elif spec.scorer is not None and result.ok:
            extra = spec.scorer(result, outputs)
            status = str(extra.pop("status", status))
            reason = extra.pop("reason", None) or reason
        if not spec.keep_outputs or status != "ok":
            shutil.rmtree(outputs, ignore_errors=True)
        if self.deadline.is_set() and not result.ok:
            reason = f"killed at the budget deadline ({reason})"
        failed = (e.stage for e in reversed(result.events) if isinstance(e, StageEvent) and e.state == "failed")
        record = AttemptRecord(
            number=number,
            key=spec.key,
            kind=spec.kind,
            iteration=self.iteration,
            slot=spec.slot,
            module_digest=spec.module.digest if spec.module else None,
            arm=spec.arm.name if spec.arm else None,
            arm_key=spec.arm.key if spec.arm else None,
            seed=spec.seed,
            status=status,
            failed_stage=next(failed, None),
            reason=reason,
            outputs="outputs" if spec.keep_outputs and status == "ok" else None,
            result=result,
            **extra,
        )
        code = {f"{s}.py": m.code for s, m in (spec.arm.modules.items() if spec.arm else [])}
        if spec.module is not None:
            code[f"{spec.module.slot}.py"] = spec.module.code
            if spec.module.tests:
                code[f"test_{spec.module.slot}.py"] = spec.module.tests
        self.store.commit_attempt(staging, record, code)
        self.index[spec.key] = record
        self.ledger.charge_attempt(record.status, result.duration_s, spec.policy.gpu_count)
        self.save()
        self.log.info(
            "attempt.finished",
            iteration=self.iteration,
            attempt=number,
            kind=spec.kind,
            key=spec.key,
            status=record.status,
            duration_s=round(result.duration_s, 2),
            reason=record.reason,
        )
        if self.deadline.is_set() and not spec.final:
            msg = "the wall-clock deadline was reached"
            raise BudgetExceededError(msg)
        return record


def check_outputs(spec: JobSpec, result: AttemptResult, outputs: Path) -> str | None:
    """Why a job that exited 0 still failed, or None when it really finished.

    A generated module can exit the process early with status 0 (`os._exit(0)` at import),
    or leave a symlink, a folder or a huge file where the weights should be. None of that
    may pass as success: the next stage would crash the controller or stage garbage.
    """
    finished = [e for e in result.events if isinstance(e, FinishedEvent)]
    if not finished or finished[-1].status != "ok":
        return "harness_not_finished: the process exited 0 before the harness reported success (early exit?)"
    for name, failure in spec.required_outputs.items():
        path = outputs / name
        if path.is_symlink() or not path.is_file():
            return f"{failure}: {name} is missing or not a regular file"
        if spec.max_output_bytes is not None and path.stat().st_size > spec.max_output_bytes:
            return (
                f"outputs_too_large: {name} is {path.stat().st_size} bytes; the next stage takes at most "
                f"{spec.max_output_bytes}"
            )
    return None
