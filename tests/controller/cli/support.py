"""What the CLI tests share: a run folder built without running anything, and the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from controller.registry import AttemptRecord, BestSoFar, RunConfig
from controller.store import RunStore
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Usage

RUN_ID = "20261128-013502-a1b2c3"
OTHER_RUN_ID = "20261128-020000-d4e5f6"
LONG_ARM = "ablation:cosine-warmup-schedule-scheduler"
ATTEMPTS: list[dict[str, object]] = [
    {"kind": "prepare", "status": "ok"},
    {"kind": "guard", "slot": "model", "module_digest": "3fa2b1c9d0e1", "status": "error", "failed_stage": "smoke"},
    {"kind": "train", "arm": "novelty:cosine-warmup-schedule", "seed": 0, "status": "ok"},
    {"kind": "train", "arm": LONG_ARM, "seed": 1, "status": "oom", "failed_stage": "run", "reason": "out of memory"},
    {
        "kind": "eval",
        "arm": "novelty:cosine-warmup-schedule",
        "seed": 0,
        "status": "ok",
        "host_score": 0.97123,
        "score_split": "validation",
    },
    {
        "kind": "test",
        "arm": "baseline",
        "status": "ok",
        "host_score": 0.9,
        "score_split": "test",
        "suspect": True,
        "suspect_reason": "telemetry 0.99 vs host 0.90",
    },
]


def build_run(runs_dir: Path) -> RunStore:
    """A finished run with one attempt of each kind, plus a second, empty run."""
    store, state = RunStore.create(runs_dir, RunConfig(budget_s=7200, max_cost_usd=5.0), RUN_ID)
    state.status = "finished"
    state.iteration = 3
    state.best = BestSoFar(arm="novelty:cosine-warmup-schedule", mean=0.97123, n=3)
    state.totals.wall_s = 3725
    state.totals.attempts = len(ATTEMPTS)
    store.save_state(state)
    RunStore.create(runs_dir, RunConfig(budget_s=900, agent="llm", model="gpt-4o-mini"), OTHER_RUN_ID)
    for number, fields in enumerate(ATTEMPTS, start=1):
        status = str(fields["status"])
        result = AttemptResult(
            status=status,
            exit_code=0 if status == "ok" else 1,
            duration_s=12.5 * number,
            started_at=datetime(2026, 11, 28, 1, 35, tzinfo=UTC),
            stdout=f"stdout of attempt {number}\n",
            usage=Usage(
                peak_memory_bytes=(300 + number) * 2**20,
                gpu_peak_memory_bytes=3 * 2**30 if number == 4 else None,
                gpu_utilization_pct=87.0 if number == 4 else None,
            ),
            limits=Policy(),
            node="10.0.0.2" if number == 4 else None,
        )
        record = AttemptRecord.model_validate(
            {"number": number, "key": f"{fields['kind']}/{number}", "iteration": 1, "result": result, **fields}
        )
        store.commit_attempt(store.staging_dir(number), record, {})
    return store


def controller(*args: str, columns: int = 80, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m controller ARGS` as a user's shell would run it, at a given terminal width."""
    full_env = {key: value for key, value in os.environ.items() if key != "SANDLAB_RUNS_DIR"}
    full_env.update({"COLUMNS": str(columns), **(env or {})})
    command = [sys.executable, "-m", "controller", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=full_env)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line a bad input must produce, with no traceback."""
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]
