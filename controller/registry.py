"""The run registry's records: run.json (RunState, RunConfig, Totals) and attempt.json.

controller/store.py lays them out on disk; everything here is a pydantic model, so what
crosses from the loop to the CLI and the report is validated both ways.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.backends import RUNNER_IMAGE
from sandbox.results import AttemptResult

RunStatus = Literal["running", "planned", "finished", "stopped", "interrupted", "failed"]
"""`planned`: `controller plan` wrote the plan and stopped before any training."""
AttemptKind = Literal["prepare", "guard", "train", "eval", "test"]


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
    llm_retries: int = 0
    """LLM requests repeated after a transient error (429, 5xx, timeout)."""
    attempts: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    repairs: int = 0
    rollbacks: int = 0


NETWORK_SOURCES = ("semantic_scholar", "arxiv", "openalex")


class ResearchConfig(BaseModel):
    """The research front-end: literature, novelty and the planning session (`--topic`)."""

    model_config = ConfigDict(extra="forbid")

    topic: str
    idea: str | None = None
    """The seed idea's Markdown (from `--idea FILE`), copied in so a resume needs no file."""
    corpus: str | None = None
    """A local BibTeX or JSONL corpus (file or folder), searched offline."""
    sources: list[str] = Field(default_factory=lambda: list(NETWORK_SOURCES))
    """Network sources to ask; empty for an offline front-end (the corpus and built-in set)."""
    per_source: int = 12
    """Papers asked of each source."""
    fulltext: int = 3
    """Open-access full texts fetched at most (never a closed paper)."""
    rounds: int = 2
    """PI -> Engineer -> Reviewer rounds at most."""
    plan_only: bool = False
    """`controller plan`: stop once plan.json is written."""


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
    train_fraction: float = Field(default=1.0, gt=0, le=1)
    """Train on this stratified share of the training split (a low-data regime); validation
    and test are untouched."""
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
    executor: Literal["local", "ray"] = "local"
    """Where attempts run: this host (`local`) or the nodes of a Ray cluster (`ray`), each node
    through its own `backend`."""
    ray_address: str | None = None
    """The cluster to join with `--executor ray`: an address, `auto`, or None for RAY_ADDRESS (else a new
    local instance)."""
    allow_weaker: bool = False
    fork_server: bool = False
    """The local backend forks each job from a server with torch already imported (see LocalBackendConfig)."""
    image: str = RUNNER_IMAGE
    pool_size: int = 1
    """Warm containers per shape (torch preloaded) kept ready by the docker backend."""
    gpus: int | list[int] = 0
    parallel: int = 1
    """Training jobs run at once (bounded again by host CPUs, memory and GPUs)."""
    report_reserve_s: float = 60.0
    matrix: dict[str, Any] = Field(default_factory=dict)
    """Overrides the plan's experiment matrix (variants, ablate, sweep); see controller.plan.Matrix."""
    iteration_limits: dict[str, float] = Field(default_factory=dict)
    mlflow: bool = True
    """Log the run to MLflow when it is installed (`--no-mlflow` turns it off)."""
    research: ResearchConfig | None = None
    """The literature and planning front-end that writes plan.json (None: the agent plans alone)."""
    memory: str | None = None
    """The findings memory this run appends its verdicts to (default: runs folder/memory.jsonl)."""


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
    """Why the run ended as it did (failed, interrupted), in a line."""
    resumes: int = 0
    integrity: Literal["sealed", "weaker"] = "sealed"
    """`weaker` when jobs could read the host's private labels (local backend, no uid drop)."""


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
    predictions_digest: str | None = None
    """sha256 of a validation job's predictions: two seeds of one arm that predict exactly alike
    had their seed pinned (a seed that never reaches the model fakes a zero spread)."""
    wrong_indices: list[int] | None = None
    """The validation samples a single-model job got wrong (host-scored): how many decides whether
    exactly alike predictions can be honest, and which ones lets a reader compare seeds."""
    outputs: str | None = None
    """Folder (relative to the attempt) holding what the job wrote, if kept."""
    result: AttemptResult


def new_run_id() -> str:
    """Sortable and unique: UTC time plus random suffix."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
