"""The run registry: everything a run writes, laid out as design.md says, written atomically.

runs/<run_id>/run.json            RunState: config, budget, status, totals
runs/<run_id>/events.jsonl        structlog JSON, one event a line
runs/<run_id>/plan.json           hypotheses, success criteria, stopping rules
runs/<run_id>/attempts/<NNNN>/    attempt.json, code/, stdout.log, stderr.log, events.jsonl
runs/<run_id>/best.json  best_config.json  aggregates.json  report/

The attempt folders are the source of truth: each is written under a temporary name and
renamed into place when complete, so after a crash an attempt is either whole or absent,
and the index is rebuilt from them on load.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.errors import RunNotFoundError
from sandbox.owners import current_owner
from sandbox.results import AttemptResult

RunStatus = Literal["running", "finished", "stopped", "interrupted", "failed"]
AttemptKind = Literal["prepare", "guard", "train", "eval", "test"]
STOP_FILE = "STOP"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = data.model_dump_json(indent=2) if isinstance(data, BaseModel) else json.dumps(data, indent=2, default=str)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Same as write_json_atomic for plain text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class LimitHit(BaseModel):
    """A budget or per-iteration limit that cut work short."""

    model_config = ConfigDict(extra="forbid")

    limit: str
    iteration: int | None = None
    detail: str
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Totals(BaseModel):
    """Running totals for run.json."""

    model_config = ConfigDict(extra="forbid")

    wall_s: float = 0.0
    cost_usd: float = 0.0
    llm_cost_usd: float = 0.0
    gpu_cost_usd: float = 0.0
    gpu_s: float = 0.0
    tokens: int = 0
    llm_calls: int = 0
    attempts: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    repairs: int = 0
    rollbacks: int = 0


class RunConfig(BaseModel):
    """What the run was started with; enough to resume it."""

    model_config = ConfigDict(extra="forbid")

    task: str = "digits"
    dataset: str = "digits"
    """digits, mnist, cifar10, imagefolder:PATH or fakedata."""
    data_root: str | None = None
    """Where mnist/cifar10 live on the host, in torchvision's layout."""
    allow_download: bool = False
    fallback_fakedata: bool = False
    arch: str = "cnn"
    """Model trunk: cnn (small CNN) or resnet18."""
    pretrained: str | None = None
    """A local weights file for the trunk; nothing is downloaded."""
    agent: Literal["offline", "llm"] = "offline"
    model: str | None = None
    budget_s: float
    max_cost_usd: float | None = None
    gpu_usd_per_hour: float = 0.0
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    backend: Literal["docker", "local"] = "docker"
    allow_weaker: bool = False
    image: str = "sandlab-runner:latest"
    pool_size: int = 1
    """Warm containers per shape (torch preloaded) kept ready by the docker backend."""
    gpus: int | list[int] = 0
    parallel: int = 1
    """Training jobs run at once (bounded again by host CPUs, memory and GPUs)."""
    report_reserve_s: float = 60.0
    matrix: dict[str, Any] = Field(default_factory=dict)
    """Overrides the plan's experiment matrix (variants, ablate, sweep); see controller.plan.Matrix."""
    iteration_limits: dict[str, float] = Field(default_factory=dict)


class BestSoFar(BaseModel):
    """The best arm by host-scored validation mean, for `controller status`."""

    model_config = ConfigDict(extra="forbid")

    arm: str
    mean: float
    n: int


class RunState(BaseModel):
    """run.json."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    status: RunStatus = "running"
    config: RunConfig
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    owner_pid: int | None = None
    owner_host: str | None = None
    owner_start: str | None = None
    """The owner's start time (clock ticks since boot), so a recycled pid is not mistaken for it."""
    iteration: int = 0
    stage: str = "starting"
    best: BestSoFar | None = None
    totals: Totals = Field(default_factory=Totals)
    limits_hit: list[LimitHit] = Field(default_factory=list)
    message: str = ""
    resumes: int = 0


class AttemptRecord(BaseModel):
    """attempts/NNNN/attempt.json: the AttemptResult plus what the loop knew about it."""

    model_config = ConfigDict(extra="forbid")

    number: int
    key: str
    """Deterministic identity of the work (e.g. train/<arm>/s0): resume never reruns a key."""
    kind: AttemptKind
    iteration: int
    slot: str | None = None
    module_digest: str | None = None
    arm: str | None = None
    arm_key: str | None = None
    seed: int | None = None
    status: str
    failed_stage: str | None = None
    """The harness stage that failed (compile, import, smoke, load, run), if one did."""
    reason: str | None = None
    """The loop's verdict when it differs from the sandbox's (e.g. invalid_predictions)."""
    host_score: float | None = None
    host_scores: dict[str, float] = Field(default_factory=dict)
    score_split: str | None = None
    telemetry_score: float | None = None
    suspect: bool = False
    suspect_reason: str | None = None
    outputs: str | None = None
    """Folder (relative to the attempt) holding what the job wrote, if kept."""
    result: AttemptResult


def new_run_id() -> str:
    """Sortable and unique: UTC time plus random suffix."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class RunStore:
    """One run's folder."""

    def __init__(self, root: Path) -> None:
        # Absolute: data folders are bind-mounted by path, and the engine needs absolute ones.
        self.root = root.absolute()
        self.attempts_dir = root / "attempts"

    # -- creation and loading -----------------------------------------------------------

    @classmethod
    def create(cls, runs_dir: Path, config: RunConfig, run_id: str | None = None) -> tuple[RunStore, RunState]:
        """Make a new run folder with its run.json."""
        run_id = run_id or new_run_id()
        store = cls(runs_dir / run_id)
        store.attempts_dir.mkdir(parents=True, exist_ok=False)
        owner = current_owner()
        state = RunState(
            run_id=run_id, config=config, owner_pid=owner.pid, owner_host=owner.host, owner_start=owner.start_ticks
        )
        store.save_state(state)
        return store, state

    @classmethod
    def open(cls, runs_dir: Path, run_id: str) -> RunStore:
        """An existing run; RunNotFoundError naming the fix otherwise."""
        store = cls(runs_dir / run_id)
        if not (store.root / "run.json").is_file():
            known = sorted(p.parent.name for p in runs_dir.glob("*/run.json"))[-5:]
            hint = f"; recent runs: {', '.join(known)}" if known else f"; no runs in {runs_dir}"
            msg = f"no run {run_id!r} in {runs_dir}{hint} (or set --runs-dir)"
            raise RunNotFoundError(msg)
        return store

    @staticmethod
    def list_runs(runs_dir: Path) -> list[RunState]:
        """Every run in the folder, oldest first."""
        states = []
        for path in sorted(runs_dir.glob("*/run.json")):
            try:
                states.append(RunState.model_validate_json(path.read_text()))
            except ValueError:
                continue
        return states

    def load_state(self) -> RunState:
        return RunState.model_validate_json((self.root / "run.json").read_text())

    def save_state(self, state: RunState) -> None:
        state.updated_at = datetime.now(UTC)
        write_json_atomic(self.root / "run.json", state)

    def write(self, name: str, data: Any) -> Path:
        """An atomic JSON file in the run folder."""
        path = self.root / name
        write_json_atomic(path, data)
        return path

    def read(self, name: str) -> Any | None:
        path = self.root / name
        return json.loads(path.read_text()) if path.is_file() else None

    # -- attempts -----------------------------------------------------------------------

    def attempts(self) -> list[AttemptRecord]:
        """All finished attempts, by number."""
        records = []
        for path in sorted(self.attempts_dir.glob("[0-9][0-9][0-9][0-9]/attempt.json")):
            records.append(AttemptRecord.model_validate_json(path.read_text()))
        return records

    def attempt_index(self) -> dict[str, AttemptRecord]:
        """Finished attempts by key (what resume replays from)."""
        return {record.key: record for record in self.attempts()}

    def attempt_dir(self, number: int) -> Path:
        return self.attempts_dir / f"{number:04d}"

    def clean_partial_attempts(self) -> int:
        """Remove half-written attempt folders a crash left behind; return how many."""
        removed = 0
        for tmp in self.attempts_dir.glob(".*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
        return removed

    def next_attempt_number(self) -> int:
        numbers = [int(p.name) for p in self.attempts_dir.glob("[0-9][0-9][0-9][0-9]")]
        return max(numbers, default=0) + 1

    def staging_dir(self, number: int) -> Path:
        """Where an attempt's files go while it runs."""
        path = self.attempts_dir / f".{number:04d}.tmp"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def commit_attempt(self, staging: Path, record: AttemptRecord, code: dict[str, str]) -> Path:
        """Write logs, code and attempt.json into the staging folder, then rename it into place."""
        result = record.result
        (staging / "stdout.log").write_text(result.stdout)
        (staging / "stderr.log").write_text(result.stderr)
        with (staging / "events.jsonl").open("w") as fh:
            for event in result.events:
                fh.write(event.model_dump_json() + "\n")
        for name, text in code.items():
            target = staging / "code" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        slim = record.model_copy(update={"result": result.model_copy(update={"stdout": "", "stderr": ""})})
        write_json_atomic(staging / "attempt.json", slim)
        final = self.attempt_dir(record.number)
        os.replace(staging, final)
        return final

    # -- control --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask a running loop (in another process) to stop gracefully."""
        write_text_atomic(self.root / STOP_FILE, datetime.now(UTC).isoformat())

    def stop_requested(self) -> bool:
        return (self.root / STOP_FILE).exists()

    def clear_stop(self) -> None:
        (self.root / STOP_FILE).unlink(missing_ok=True)
