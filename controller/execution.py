"""The run's machinery: data preparation, the one memoized way jobs run, and bookkeeping.

Every job goes through `AttemptRunner.execute`, memoized by a deterministic key: on resume
the loop runs again from the top, finished attempts are read back instead of rerun, and a
deterministic agent (or the LLM cache) makes the same decisions. What was running when the
controller died runs again; nothing that finished is lost or repeated.
"""

from __future__ import annotations

import json
import platform
import shutil
import socket
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from controller.agents.base import Agent
from controller.budget import (
    Budget,
    IterationLimits,
    IterationMeter,
)
from controller.datasets import DatasetSpec, resolve_dataset
from controller.errors import BudgetExceededError, ControllerError
from controller.plan import Arm, ModuleCode
from controller.registry import AttemptKind, AttemptRecord, LimitHit, RunState, RunStore
from controller.runlog import configure_run_logging
from controller.scheduler import ResourcePool
from controller.tasks import Task
from sandbox.base import Job, Sandbox
from sandbox.events import MetricEvent, StageEvent
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Status

Progress = Callable[[str], None]
RAW_DATA_MOUNT = "/data/raw"
"""Where the prepare container sees the dataset (read-only)."""
PUBLIC_DATA_MOUNT = "/data/public"
"""Where training containers see train and val (read-only)."""
INFRA_RETRIES = 2
"""Times a job is retried after an infra_error (never after a failure of the code)."""
INFRA_RETRY_PAUSE_S = 2.0
TRIM_CHARS = 4000
"""How much of a log the agent sees (head and tail); the full text stays on disk."""


class InterruptedRunError(ControllerError):
    """SIGINT/SIGTERM: containers were killed; the run is left resumable."""


class StopRequestedError(ControllerError):
    """`controller stop` asked for a graceful stop."""


def harness(*args: str) -> list[str]:
    """argv for the in-container harness (`python3 -m sandbox.harness ...`)."""
    return ["python3", "-m", "sandbox.harness", *args]


def trim(text: str, limit: int = TRIM_CHARS) -> str:
    """Head and tail of a long text, saying how much was cut (for prompts only)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


@dataclass(frozen=True)
class StagePolicies:
    """Which policy each kind of job runs under."""

    guard: Policy
    train: Policy
    evaluate: Policy


@dataclass
class LoopContext:
    """Everything one loop run works with (injected, so tests can use fakes)."""

    store: RunStore
    state: RunState
    sandbox: Sandbox
    agent: Agent
    task: Task
    policies: StagePolicies
    budget: Budget
    limits: IterationLimits
    progress: Progress = print
    resources: ResourcePool | None = None
    """Shared CPUs, memory and GPU ids; None runs jobs without accounting (tests)."""
    parallel: int = 1
    """Training jobs of one iteration run at most this many at once."""


class AttemptRunner:
    """Data, jobs and bookkeeping for one run; ResearchLoop adds the research on top."""

    def __init__(self, ctx: LoopContext) -> None:
        self.ctx = ctx
        self.store, self.state, self.task = ctx.store, ctx.state, ctx.task
        configure_run_logging(ctx.store.root / "events.jsonl")
        self.log = structlog.get_logger("sandlab.loop").bind(run_id=ctx.state.run_id)
        self.index = ctx.store.attempt_index()
        self.arms: dict[str, Arm] = {}
        self.meta: dict[str, Any] = {}
        self.scores: dict[str, dict[int, AttemptRecord]] = {}
        self.iteration = 0
        self.meter: IterationMeter | None = None
        self._interrupted = threading.Event()
        self._deadline = threading.Event()
        self._timer: threading.Timer | None = None
        self._lock = threading.RLock()
        self._next_number = 0

    # -- control from other threads -----------------------------------------------------

    def interrupt(self) -> None:
        """SIGINT/SIGTERM: kill running containers; the loop unwinds as `interrupted`."""
        self._interrupted.set()
        self.ctx.sandbox.kill_all()

    def _deadline_reached(self) -> None:
        self._deadline.set()
        killed = self.ctx.sandbox.kill_all()
        self.log.warning("budget.deadline", killed_containers=killed)

    @property
    def data_dir(self) -> Path:
        return self.store.root / "data"

    def dataset(self) -> DatasetSpec:
        """The run's dataset, resolved on the host (checked, fetched or replaced by FakeData)."""
        config = self.state.config
        spec = resolve_dataset(
            config.dataset,
            Path(config.data_root) if config.data_root else None,
            allow_download=config.allow_download,
            fallback_fakedata=config.fallback_fakedata,
            progress=self.ctx.progress,
        )
        if spec.fallback_from:
            self.log.warning("dataset.fallback", requested=config.dataset, reason=spec.fallback_from)
            self.ctx.progress(f"dataset unavailable ({spec.fallback_from}); using fakedata as asked")
        return spec

    def prepare_data(self) -> None:
        """Build the fixed splits once, in a container; keep the labels on the host."""
        if (self.data_dir / "private" / "labels.json").is_file():
            self.meta = json.loads((self.data_dir / "meta.json").read_text())
            return
        spec = self.dataset()
        job_files = self.task.code(with_prepare=True)
        job_files["config.json"] = json.dumps({"dataset": spec.kind, "raw_dir": RAW_DATA_MOUNT}).encode()
        policy = self.ctx.policies.train
        if spec.host_path is not None:
            policy = policy.with_overrides(data_mounts=[{"source": str(spec.host_path), "target": RAW_DATA_MOUNT}])
        record = self.execute(
            "prepare",
            "prepare",
            policy,
            self.task.timeouts.prepare,
            harness("run", "--job", self.task.entrypoints.prepare, "--config", "config.json"),
            job_files,
            keep_outputs=True,
        )
        if record.status != Status.ok:
            msg = f"data preparation failed ({record.result.reason}); see {self.store.attempt_dir(record.number)}"
            raise ControllerError(msg)
        source = self.store.attempt_dir(record.number) / "outputs" / "out"
        tmp = self.data_dir.with_name("data.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(source / "private")  # the only copy of the labels is the host's data/
        tmp.replace(self.data_dir)
        self.meta = json.loads((self.data_dir / "meta.json").read_text())

    def record_environment(self) -> None:
        """environment.json: image digest, the image's pip freeze, host, GPUs, seeds."""
        if (self.store.root / "environment.json").is_file():
            return
        from sandbox.gpus import detect_gpus

        freeze = self.ctx.sandbox.run(
            Job(command=["python3", "-m", "pip", "freeze", "--all"], run_id=self.state.run_id, attempt="env"),
            self.ctx.policies.guard,
        )
        prepare = self.index.get("prepare")
        self.store.write(
            "environment.json",
            {
                "host": socket.gethostname(),
                "platform": platform.platform(),
                "backend": self.ctx.sandbox.name,
                "image": prepare.result.image if prepare else None,
                "image_id": prepare.result.image_id if prepare else None,
                "pip_freeze": freeze.stdout.splitlines() if freeze.ok else [],
                "gpus": [g.__dict__ for g in detect_gpus()],
                "seeds": self.state.config.seeds,
                "deterministic": "torch.use_deterministic_algorithms(True, warn_only=True) and fixed seeds",
            },
        )

    def labels(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "private" / "labels.json").read_text())  # type: ignore[no-any-return]

    # -- the one way jobs run ---------------------------------------------------------------

    def execute(
        self,
        key: str,
        kind: AttemptKind,
        policy: Policy,
        timeout_s: float,
        command: list[str],
        files: dict[str, bytes],
        *,
        slot: str | None = None,
        module: ModuleCode | None = None,
        arm: Arm | None = None,
        seed: int | None = None,
        keep_outputs: bool = False,
        scorer: Callable[[AttemptResult, Path], dict[str, Any]] | None = None,
        final: bool = False,
    ) -> AttemptRecord:
        """Run a job in the sandbox, or return its recorded attempt if it already finished.

        Thread-safe: bookkeeping happens under the loop's lock, the job itself outside it.
        """
        with self._lock:
            done = self.index.get(key)
            if done is not None:
                return done
            if self._interrupted.is_set():
                raise InterruptedRunError
            if self.store.stop_requested() and not final:
                raise StopRequestedError
            budget = self.ctx.budget
            budget.check_cost()
            if self.meter is not None and not final:
                self.meter.check()
                self.meter.attempts += 1  # reserved now, so parallel jobs respect the limit
            clipped = (budget.admit_final if final else budget.admit)(timeout_s, self.task.min_timeout)
            self._next_number = max(self._next_number, self.store.next_attempt_number())
            number = self._next_number
            self._next_number += 1
        what = slot or (arm.name if arm else "")
        self.ctx.progress(f"  [{number:04d}] {kind} {what}{'' if seed is None else f' seed {seed}'} ...")
        for retry in range(INFRA_RETRIES + 1):
            # Only the machinery's failures are retried; a job's own failure is data.
            staging = self.store.staging_dir(number)
            outputs = staging / "outputs"
            job = Job(
                command=command, files=files, outputs_dir=outputs, run_id=self.state.run_id, attempt=f"{number:04d}"
            )
            with self._resources(policy.with_overrides(timeout=clipped)) as granted:
                result = self.ctx.sandbox.run(job, granted)
            if self._interrupted.is_set():
                shutil.rmtree(staging, ignore_errors=True)
                raise InterruptedRunError
            if result.status != Status.infra_error or retry == INFRA_RETRIES or self._deadline.is_set():
                break
            self.log.warning("attempt.infra_retry", attempt=number, retry=retry + 1, reason=result.reason)
            self.ctx.progress(f"  [{number:04d}] infrastructure failure ({result.reason}); retrying")
            time.sleep(INFRA_RETRY_PAUSE_S * (retry + 1))
        with self._lock:
            return self._record(
                key,
                kind,
                number,
                staging,
                outputs,
                result,
                policy,
                slot=slot,
                module=module,
                arm=arm,
                seed=seed,
                keep_outputs=keep_outputs,
                scorer=scorer,
                final=final,
            )

    def _resources(self, policy: Policy) -> Any:
        return self.ctx.resources.hold(policy) if self.ctx.resources is not None else nullcontext(policy)

    def _record(
        self,
        key: str,
        kind: AttemptKind,
        number: int,
        staging: Path,
        outputs: Path,
        result: AttemptResult,
        policy: Policy,
        *,
        slot: str | None,
        module: ModuleCode | None,
        arm: Arm | None,
        seed: int | None,
        keep_outputs: bool,
        scorer: Callable[[AttemptResult, Path], dict[str, Any]] | None,
        final: bool,
    ) -> AttemptRecord:
        extra = scorer(result, outputs) if scorer is not None else {}
        if not keep_outputs:
            shutil.rmtree(outputs, ignore_errors=True)
        deadline_note = "killed at the budget deadline" if self._deadline.is_set() and not result.ok else None
        record = AttemptRecord(
            number=number,
            key=key,
            kind=kind,
            iteration=self.iteration,
            slot=slot,
            module_digest=module.digest if module else None,
            arm=arm.name if arm else None,
            arm_key=arm.key if arm else None,
            seed=seed,
            status=str(extra.pop("status", result.status)),
            failed_stage=next(
                (e.stage for e in reversed(result.events) if isinstance(e, StageEvent) and e.state == "failed"), None
            ),
            reason=extra.pop("reason", None) or deadline_note or result.reason,
            outputs="outputs" if keep_outputs else None,
            result=result,
            **extra,
        )
        code = {f"{s}.py": m.code for s, m in (arm.modules.items() if arm else [])}
        if module is not None:
            code[f"{module.slot}.py"] = module.code
        self.store.commit_attempt(staging, record, code)
        self.index[key] = record
        self._account(record, policy)
        self.log.info(
            "attempt.finished",
            attempt=number,
            kind=kind,
            key=key,
            status=record.status,
            duration_s=round(result.duration_s, 2),
            reason=record.reason,
        )
        if self._deadline.is_set() and not final:
            msg = "the wall-clock deadline was reached"
            raise BudgetExceededError(msg)
        return record

    # -- bookkeeping -----------------------------------------------------------------------------

    def _account(self, record: AttemptRecord, policy: Policy) -> None:
        totals = self.state.totals
        totals.attempts += 1
        totals.by_status[record.status] = totals.by_status.get(record.status, 0) + 1
        gpu_s = record.result.duration_s * policy.gpu_count
        totals.gpu_s += gpu_s
        gpu_usd = gpu_s / 3600 * self.state.config.gpu_usd_per_hour
        totals.gpu_cost_usd += gpu_usd
        totals.cost_usd += gpu_usd
        self.ctx.budget.charge(gpu_usd)
        if self.meter is not None:
            self.meter.gpu_s += gpu_s
            self.meter.cost_usd += gpu_usd
        self._save()

    def _charge_agent(self) -> None:
        """Move the agent's LLM spending since the last call into the budget and meter."""
        usage = getattr(self.ctx.agent, "usage", None)
        if usage is None:
            return
        totals = self.state.totals
        delta_usd = usage.cost_usd - totals.llm_cost_usd
        delta_tokens = usage.prompt_tokens + usage.completion_tokens - totals.tokens
        totals.llm_cost_usd = usage.cost_usd
        totals.tokens += delta_tokens
        totals.llm_calls = usage.calls
        totals.cost_usd += delta_usd
        self.ctx.budget.charge(delta_usd)
        if self.meter is not None:
            self.meter.cost_usd += delta_usd
            self.meter.tokens += delta_tokens

    def _limit(self, limit: str, detail: str) -> None:
        self.state.limits_hit.append(LimitHit(limit=limit, iteration=self.iteration, detail=detail))
        self.log.warning("limit.hit", limit=limit, detail=detail)
        self.ctx.progress(f"  limit hit: {limit}: {detail}")
        self._save()

    def _set_stage(self, stage: str) -> None:
        self.state.stage = stage
        self._save()

    def _save(self) -> None:
        self.state.totals.wall_s = self.ctx.budget.used_s()
        self.store.save_state(self.state)

    def _module_files(self, arm: Arm) -> dict[str, bytes]:
        return {self.task.slots[s].file: m.code.encode() for s, m in arm.modules.items()}

    def _smoke_spec(self) -> bytes:
        shape = self.meta.get("input_shape", list(self.task.input_shape))
        return json.dumps(
            {"input_shape": shape, "num_classes": self.meta.get("num_classes", self.task.num_classes)}
        ).encode()

    def _train_config(self, arm: Arm, seed: int) -> dict[str, Any]:
        return {
            **self.task.defaults,
            "arch": self.state.config.arch,
            **arm.hyper,
            "seed": seed,
            "num_classes": self.meta.get("num_classes", self.task.num_classes),
            "input_shape": self.meta.get("input_shape", list(self.task.input_shape)),
            "mean": self.meta.get("mean"),
            "std": self.meta.get("std"),
            "threads": max(1, int(self.ctx.policies.train.cpus)),
        }


def _telemetry_claim(result: AttemptResult, metric: str) -> float | None:
    """The best value the job itself reported for anything named like the metric."""
    values = [e.value for e in result.events if isinstance(e, MetricEvent) and metric in e.name.lower()]
    return max(values) if values else None
