"""Tasks are folders: a task.yaml, trusted container-side scripts, slot specs, a metric.

Adding a task means adding a folder here (or pointing `--task` at one); the loop never
changes. See digits/ for the reference layout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from controller.errors import BadInputError
from sandbox.durations import parse_duration

TASKS_DIR = Path(__file__).resolve().parent
Seconds = Annotated[float, BeforeValidator(parse_duration)]
SMOKE_BATCH = 4
"""Batch size of the guard's smoke checks (staged in smoke.json, expected by the host)."""


class Slot(BaseModel):
    """A place in the task's code that a generated module fills."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    """Path of the module in the workspace, under gen/."""
    baseline: str
    """Path, in the task folder, of the module the baseline arm uses."""
    suite: dict[str, str] = Field(default_factory=dict)
    """Named alternative modules (paths in the task folder) for the slot's ablation dimension."""
    entry: str
    """Name the module must define."""
    smoke: str
    """module:function in the task folder that smoke-tests the entry point."""
    contract: str
    """What the entry point must do; shown to the agent."""
    output: Literal["input", "logits", "scalar", "step", "indices"] = "input"
    """What the smoke check must have observed: a batch shaped like the input, [batch,
    num_classes] logits, a finite scalar (a loss), a training step that changed the
    parameters and left them finite (optimiser, schedule, training epoch), or valid row
    indices (a sampler). The host checks the observation against it (SMOKE_EXPECTATIONS)."""


class Metric(BaseModel):
    """The metric the host computes from predictions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "accuracy"
    higher_is_better: bool = True


class Timeouts(BaseModel):
    """Per-stage job timeouts; each job's is clipped to the budget left."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prepare: Seconds = 120.0
    guard: Seconds = 90.0
    train: Seconds = 180.0
    predict: Seconds = 90.0


class Entrypoints(BaseModel):
    """module:function names of the task's container-side scripts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prepare: str
    train: str
    predict: str


class Prior(BaseModel):
    """What the planner assumes before this run has measured anything (a pilot, recorded)."""

    model_config = ConfigDict(extra="forbid")

    baseline_sd: float = Field(gt=0)
    """Seed-to-seed standard deviation of the baseline's validation metric."""
    pair_s: float = Field(gt=0)
    """Wall seconds of one train + evaluate pair."""
    measured: str
    """Where the numbers come from (machine, backend, run)."""
    train_fraction: float = Field(default=1.0, gt=0, le=1)
    """The share of the train split they were measured at (`--train-fraction`)."""


class Task(BaseModel):
    """A task folder, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    metric: Metric = Field(default_factory=Metric)
    num_classes: int
    input_shape: tuple[int, int, int]
    slots: dict[str, Slot]
    entrypoints: Entrypoints
    code_files: list[str]
    """Files staged into guard, train and predict workspaces."""
    prepare_files: list[str] = Field(default_factory=list)
    """Extra files only the data-preparation job needs."""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    min_timeout: Seconds = 30.0
    """A job whose clipped timeout would be shorter than this is not admitted."""
    defaults: dict[str, float | int | str | bool] = Field(default_factory=dict)
    topic: str = ""
    """The research topic a run on this task starts from when none is given."""
    priors: list[Prior] = Field(default_factory=list)
    folder: Path = Path()

    def prior_for(self, train_fraction: float = 1.0) -> Prior | None:
        """The recorded prior measured nearest this train fraction (on a log scale), if any."""
        if not self.priors:
            return None
        return min(self.priors, key=lambda p: abs(math.log(p.train_fraction / train_fraction)))

    @property
    def prior(self) -> Prior | None:
        """The prior for the full train split."""
        return self.prior_for(1.0)

    def smoke_files(self, shape: dict[str, Any]) -> dict[str, bytes]:
        """smoke.json: the dataset's shapes, the batch the smoke checks use, the default hyper."""
        spec = {
            "batch": SMOKE_BATCH,
            "input_shape": shape["input_shape"],
            "num_classes": shape["num_classes"],
            "hyper": self.defaults,
        }
        return {"smoke.json": json.dumps(spec).encode()}

    def smoke_expectation(self, slot: str, shape: dict[str, Any]) -> dict[str, Any]:
        """What a passing smoke check of `slot` must have observed."""
        output = self.slots[slot].output
        if output == "step":
            return {"stepped": True, "finite": True}
        if output == "indices":
            return {"dtype": "int64", "in_range": True, "nonempty": True}
        if output == "scalar":
            dims = []
        elif output == "logits":
            dims = [SMOKE_BATCH, int(shape["num_classes"])]
        else:
            dims = [SMOKE_BATCH, *(int(d) for d in shape["input_shape"])]
        return {"shape": dims, "dtype": "float32", "finite": True}

    @staticmethod
    def check_smoke(path: Path, expected: dict[str, Any]) -> dict[str, Any]:
        """Record fields for a guard attempt: an error unless the observation matches."""
        try:
            observed = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return {"status": "error", "reason": f"smoke_unverified: unreadable {path.name} ({exc})"}
        if not isinstance(observed, dict):
            return {"status": "error", "reason": f"smoke_unverified: {path.name} holds no observation"}
        wrong = {k: observed.get(k) for k, v in expected.items() if observed.get(k) != v}
        if wrong:
            return {"status": "error", "reason": f"smoke_mismatch: observed {wrong}, expected {expected}"}
        return {}

    def suite_code(self, slot: str) -> dict[str, str]:
        """The slot's alternative modules by name (its systematic ablation dimension)."""
        return {name: (self.folder / path).read_text() for name, path in sorted(self.slots[slot].suite.items())}

    def baseline_code(self, slot: str) -> str:
        """Source of the slot's baseline module."""
        return (self.folder / self.slots[slot].baseline).read_text()

    def code(self, *, with_prepare: bool = False) -> dict[str, bytes]:
        """The task's trusted files, by workspace path."""
        names = self.code_files + (self.prepare_files if with_prepare else [])
        return {name: (self.folder / name).read_bytes() for name in names}


def available_tasks() -> list[str]:
    """Built-in task names."""
    return sorted(p.parent.name for p in TASKS_DIR.glob("*/task.yaml"))


def load_task(name_or_path: str) -> Task:
    """Load a built-in task by name, or a task folder by path."""
    candidate = Path(name_or_path)
    folder = candidate if (candidate / "task.yaml").is_file() else TASKS_DIR / name_or_path
    spec = folder / "task.yaml"
    if not spec.is_file():
        msg = (
            f"unknown task {name_or_path!r}; use one of: {', '.join(available_tasks())}, "
            "or a folder containing task.yaml"
        )
        raise BadInputError(msg)
    try:
        raw = yaml.safe_load(spec.read_text()) or {}
        task = Task.model_validate({**raw, "folder": folder})
    except (yaml.YAMLError, ValidationError) as exc:
        msg = f"{spec}: invalid task definition: {str(exc).splitlines()[0]}"
        raise BadInputError(msg) from None
    listed = task.code_files + task.prepare_files + [s.baseline for s in task.slots.values()]
    listed += [path for s in task.slots.values() for path in s.suite.values()]
    missing = [f for f in listed if not (folder / f).is_file()]
    if missing:
        msg = f"{spec}: files listed but missing: {', '.join(missing)}"
        raise BadInputError(msg)
    return task
