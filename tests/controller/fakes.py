"""Small, honest fakes for the controller's tests: a sandbox and a clock."""

from __future__ import annotations

import json
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sandbox.base import Job, Sandbox
from sandbox.events import Event, MetricEvent, StageEvent
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Status, Usage

N_LABELS = 200


class FakeClock:
    """A monotonic clock the fake sandbox advances by each job's duration."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Canned:
    """One scripted outcome."""

    status: Status = Status.ok
    exit_code: int | None = 0
    events: list[Event] = field(default_factory=list)
    stderr: str = ""
    stdout: str = ""
    files: dict[str, bytes] = field(default_factory=dict)


def job_kind(job: Job) -> str:
    """prepare, guard, train or predict, from the harness command."""
    if "guard" in job.command:
        return "guard"
    if "freeze" in job.command:
        return "env"
    target = job.command[job.command.index("--job") + 1]
    return target.split(":")[0]


def quality(config: dict[str, object]) -> float:
    """A deterministic 'accuracy' for a configuration: wider and shifted is better."""
    base = 0.80 + 0.05 * (int(config.get("width", 32)) == 64) + 0.01 * int(config.get("seed", 0))  # type: ignore[call-overload]
    return min(base, 0.99)


class FakeSandbox(Sandbox):
    """Plays the digits task's jobs without containers.

    Per kind, a queue of Canned outcomes can be scripted; otherwise a plausible default
    is produced (prepare writes splits, train writes a 'model' holding its quality,
    predict writes predictions achieving it). It raises once a scripted queue runs out
    and `strict` is set, like SWE-ReX's DummyRuntime.
    """

    name = "fake"

    def __init__(self, clock: FakeClock | None = None, job_seconds: float = 5.0) -> None:
        self.clock = clock or FakeClock()
        self.job_seconds = job_seconds
        self.queues: dict[str, deque[Canned]] = {}
        self.calls: list[tuple[str, Job, Policy]] = []
        self.fail_after: int | None = None
        self.killed = 0
        self.on_run: Callable[[str, Job], None] | None = None

    def script(self, kind: str, *outcomes: Canned) -> None:
        self.queues.setdefault(kind, deque()).extend(outcomes)

    def kill_all(self) -> int:
        self.killed += 1
        return 0

    def run(self, job: Job, policy: Policy) -> AttemptResult:
        kind = job_kind(job)
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("controller crashed (simulated kill -9)")
        self.calls.append((kind, job, policy))
        if self.on_run is not None:
            self.on_run(kind, job)
        queue = self.queues.get(kind)
        canned = queue.popleft() if queue else self.default(kind, job)
        self.clock.now += self.job_seconds
        if job.outputs_dir is not None:
            for name, data in canned.files.items():
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
            events=canned.events,
            usage=Usage(peak_memory_bytes=100 * 2**20, cpu_s=1.0),
            limits=policy,
            image="fake",
            backend="fake",
            reason=f"canned {canned.status}",
            outputs_dir=job.outputs_dir,
        )

    def default(self, kind: str, job: Job) -> Canned:
        if kind == "prepare":
            labels = {
                "classes": list(range(10)),
                "val": [i % 10 for i in range(N_LABELS)],
                "test": [(i * 7) % 10 for i in range(N_LABELS)],
            }
            return Canned(
                files={
                    "out/public/train.npz": b"train",
                    "out/public/val.npz": b"val",
                    "out/eval/val_inputs.npy": b"val-inputs",
                    "out/eval/test_inputs.npy": b"test-inputs",
                    "out/private/labels.json": json.dumps(labels).encode(),
                    "out/meta.json": json.dumps(
                        {"input_shape": [1, 8, 8], "num_classes": 10, "mean": [0.3], "std": [0.4]}
                    ).encode(),
                }
            )
        if kind == "env":
            return Canned(stdout="torch==2.14.1\nnumpy==2.4.6\n")
        if kind == "guard":
            return Canned(events=[StageEvent(stage=s, state="passed") for s in ("compile", "import", "smoke")])
        config = json.loads(job.files["config.json"])
        if kind == "train":
            q = quality(config)
            return Canned(
                files={"out/model.pt": struct.pack("d", q)},
                events=[MetricEvent(name="val_accuracy_telemetry", value=q)],
            )
        # predict: each model file holds its quality; predict that fraction correctly
        split = "test" if job.files["inputs.npy"] == b"test-inputs" else "val"
        truth = [i % 10 for i in range(N_LABELS)] if split == "val" else [(i * 7) % 10 for i in range(N_LABELS)]
        predictions = {}
        for name in config["models"]:
            q = struct.unpack("d", job.files[f"models/{name}.pt"])[0]
            right = round(q * N_LABELS)
            predictions[name] = [t if i < right else (t + 1) % 10 for i, t in enumerate(truth)]
        return Canned(files={"out/predictions.json": json.dumps({"predictions": predictions}).encode()})


def attempt_calls(sandbox: FakeSandbox) -> int:
    """Calls that become attempts (the environment probe does not)."""
    return sum(1 for kind, _, _ in sandbox.calls if kind != "env")
