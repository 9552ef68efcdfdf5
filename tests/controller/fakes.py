"""Small, honest fakes for the controller's tests: a sandbox and a clock."""

from __future__ import annotations

import json
import random
import re
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.agents.offline import OfflineAgent
from controller.ledger import IterationLimits, Ledger
from controller.loop import LoopContext, ResearchLoop, StagePolicies
from controller.registry import AttemptRecord, ResearchConfig, RunConfig
from controller.store import RunStore
from controller.tasks import load_task
from controller.wiring import charge_agent_to, stage_policies
from sandbox.base import Job, Sandbox
from sandbox.events import Event, FinishedEvent, MetricEvent, StageEvent
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Status, Usage

TASK = load_task("digits")
N_LABELS = 200
N_TRAIN = 1000
META = {"input_shape": [1, 8, 8], "num_classes": 10, "mean": [0.3], "std": [0.4], "n_train": N_TRAIN}


class SimulatedKill(BaseException):
    """The controller process dies mid-run (not an error the loop could handle)."""


class FakeClock:
    """A monotonic clock the fake sandbox advances by each job's duration."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Canned:
    """One scripted outcome. `files=None` means: what an honest job of that kind would write."""

    status: Status = Status.ok
    exit_code: int | None = 0
    events: list[Event] = field(default_factory=list)
    stderr: str = ""
    stdout: str = ""
    files: dict[str, bytes] | None = None
    finished: bool = True
    """Whether the harness got to report that it finished (False: the job exited early)."""


def job_kind(job: Job) -> str:
    """prepare, guard, train or predict, from the harness command."""
    if "guard" in job.command:
        return "guard"
    if "freeze" in job.command:
        return "env"
    target = job.command[job.command.index("--job") + 1]
    return target.split(":")[0]


def quality(config: dict[str, object]) -> float:
    """A deterministic 'accuracy' for a configuration: wider is better, seeds differ a little."""
    base = 0.80 + 0.05 * (int(config.get("width", 32)) == 64) + 0.01 * (int(config.get("seed", 0)) % 10)  # type: ignore[call-overload]
    return min(base, 0.99)


class FakeSandbox(Sandbox):
    """Plays the digits task's jobs without containers.

    Per kind, a queue of Canned outcomes can be scripted; a kind never scripted gets what an
    honest job would do (prepare writes splits, train writes a 'model' holding its quality,
    predict writes predictions achieving it). Once a scripted queue runs out the fake fails
    the test loudly (like SWE-ReX's DummyRuntime), unless the script said `then_honest`.
    Predict checks what the real one would trip over: the model's input shape and
    normalisation must be the data's.
    """

    name = "fake"
    seals_host_files = True
    isolates_concurrent_jobs = True

    def __init__(self, clock: FakeClock | None = None, job_seconds: float = 5.0) -> None:
        self.clock = clock or FakeClock()
        self.job_seconds = job_seconds
        self.queues: dict[str, deque[Canned]] = {}
        self.honest_after: set[str] = set()
        self.calls: list[tuple[str, Job, Policy]] = []
        self.fail_after: int | None = None
        self.killed = 0
        self.on_run: Callable[[str, Job], None] | None = None

    def script(self, kind: str, *outcomes: Canned, then_honest: bool = False) -> None:
        self.queues.setdefault(kind, deque()).extend(outcomes)
        if then_honest:
            self.honest_after.add(kind)

    def kill_all(self) -> int:
        self.killed += 1
        return 0

    def run(self, job: Job, policy: Policy) -> AttemptResult:
        kind = job_kind(job)
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise SimulatedKill
        self.calls.append((kind, job, policy))
        if self.on_run is not None:
            self.on_run(kind, job)
        queue = self.queues.get(kind)
        if queue:
            canned = queue.popleft()
        elif queue is not None and kind not in self.honest_after:
            pytest.fail(f"FakeSandbox: the test scripted {kind} jobs but ran out of canned results")
        else:
            canned = self.honest(kind, job)
        files = canned.files
        if files is None:
            files = self.honest(kind, job).files if canned.status == Status.ok else {}
        events = list(canned.events)
        if canned.finished:
            events.append(FinishedEvent(status="ok" if canned.status == Status.ok else "error"))
        self.clock.now += self.job_seconds
        if job.outputs_dir is not None:
            for name, data in (files or {}).items():
                path = job.outputs_dir / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        return AttemptResult(
            status=canned.status,
            exit_code=canned.exit_code,
            duration_s=self.job_seconds,
            started_at=datetime.now(UTC),
            stderr=canned.stderr,
            stdout=canned.stdout,
            events=events,
            usage=Usage(peak_memory_bytes=100 * 2**20, cpu_s=1.0),
            limits=policy,
            image="fake",
            backend="fake",
            reason=f"canned {canned.status}",
            outputs_dir=job.outputs_dir,
        )

    def honest(self, kind: str, job: Job) -> Canned:
        if kind == "prepare":
            labels = {
                "classes": list(range(10)),
                "val": [i % 10 for i in range(N_LABELS)],
                "test": [(i * 7) % 10 for i in range(N_LABELS)],
            }
            return Canned(
                files={
                    "out/public/train.npz": b"train",
                    "out/eval/val_inputs.npy": b"val-inputs",
                    "out/eval/test_inputs.npy": b"test-inputs",
                    "out/private/labels.json": json.dumps(labels).encode(),
                    "out/meta.json": json.dumps(META).encode(),
                }
            )
        if kind == "env":
            return Canned(stdout="torch==2.14.1\nnumpy==2.4.6\n", files={})
        if kind == "guard":
            spec = json.loads(job.files["smoke.json"])
            module = job.command[job.command.index("--module") + 1]
            slot = next(name for name, s in TASK.slots.items() if s.file == module)
            observed = TASK.smoke_expectation(slot, spec)  # what an honest smoke check observes
            return Canned(
                events=[StageEvent(stage=s, state="passed") for s in ("load", "compile", "import", "smoke")],
                files={"out/smoke.json": json.dumps(observed).encode()},
            )
        config = json.loads(job.files["config.json"])
        if kind == "train":
            q = quality(config)
            return Canned(
                files={"out/model.pt": struct.pack("d", q)},
                events=[MetricEvent(name="holdout_accuracy", value=q, step=0)],
            )
        # predict: the model must be built for the data (shape, normalisation), else it crashes
        for key in ("input_shape", "num_classes", "mean", "std"):
            if config.get(key) != META[key]:
                return Canned(status=Status.error, exit_code=1, stderr=f"model built with {key}={config.get(key)}")
        split = "test" if job.files["inputs.npy"] == b"test-inputs" else "val"
        truth = [i % 10 for i in range(N_LABELS)] if split == "val" else [(i * 7) % 10 for i in range(N_LABELS)]
        predictions = {}
        for name in config["models"]:
            q = struct.unpack("d", job.files[f"models/{name}.pt"])[0]
            # Honest seeds miss different samples: which ones is drawn from the seed.
            missed = set(random.Random(name).sample(range(N_LABELS), N_LABELS - round(q * N_LABELS)))
            predictions[name] = [(t + 1) % 10 if i in missed else t for i, t in enumerate(truth)]
        return Canned(files={"out/predictions.json": json.dumps({"predictions": predictions}).encode()})


def attempt_calls(sandbox: FakeSandbox) -> int:
    """Calls that become attempts (the environment probe does not)."""
    return sum(1 for kind, _, _ in sandbox.calls if kind != "env")


def make_loop(
    tmp_path: Path,
    sandbox: FakeSandbox,
    *,
    budget_s: float = 3600,
    reserve_s: float = 60,
    limits: IterationLimits | None = None,
    agent: Any = None,
    seeds: int = 3,
    run_id: str = "r1",
    max_cost: float | None = None,
    policies: StagePolicies | None = None,
    gpu_usd_per_hour: float = 0.0,
    resources: Any = None,
    parallel: int = 1,
    research: ResearchConfig | None = None,
) -> ResearchLoop:
    config = RunConfig(
        research=research,
        budget_s=budget_s,
        seeds=list(range(seeds)),
        report_reserve_s=reserve_s,
        max_cost_usd=max_cost,
        gpu_usd_per_hour=gpu_usd_per_hour,
        mlflow=False,  # tests/controller/test_tracking.py logs to MLflow on purpose; the rest need not
    )
    runs = tmp_path / "runs"
    try:
        store = RunStore.open(runs, run_id)
        state = store.load_state()
    except Exception:
        store, state = RunStore.create(runs, config, run_id)
    ledger = Ledger(
        state.totals,
        wall_s=budget_s,
        reserve_s=reserve_s,
        max_cost_usd=max_cost,
        gpu_usd_per_hour=gpu_usd_per_hour,
        limits=limits or IterationLimits(),
        clock=sandbox.clock,
    )
    ctx = LoopContext(
        store=store,
        state=state,
        sandbox=sandbox,
        agent=agent or OfflineAgent(),
        task=TASK,
        policies=policies or stage_policies(config),
        ledger=ledger,
        progress=lambda line: None,
        resources=resources,
        parallel=parallel,
    )
    charge_agent_to(ledger, ctx.agent)
    return ResearchLoop(ctx)


def markdown_table_shapes(text: str) -> list[list[int]]:
    """The cell count of every line of every pipe table in `text`, one list a table.

    A GitHub-flavoured table whose delimiter row has another count of cells than its header
    is not a table at all: it renders as a paragraph of pipes. Escaped pipes (\\|) are text.
    """
    tables: list[list[int]] = []
    current: list[int] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(len(re.split(r"(?<!\\)\|", line.strip())) - 2)
        elif current:
            tables.append(current)
            current = []
    return tables


def held_out_records(loop: ResearchLoop) -> list[AttemptRecord]:
    """The run's test-split attempts (one per seed of the selected arm), by number."""
    return sorted((r for r in loop.attempts.index.values() if r.kind == "test"), key=lambda r: r.number)
