"""End to end with real Docker: a whole run, and kill -9 then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from controller.plan import Plan
from sandbox.backends.docker import labels

pytestmark = pytest.mark.docker
CONTROLLER = [sys.executable, "-m", "controller"]
SLACK_S = 45
BUILTIN_CORPUS = Path(__file__).resolve().parents[2] / "controller" / "research" / "corpus" / "builtin.jsonl"


def _containers(client: Any, run_id: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{labels.RUN}={run_id}"}, ignore_removed=True)


def _pool_containers_of(client: Any, pid: int) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{labels.OWNER_PID}={pid}"}, ignore_removed=True)


def _orphans(client: Any) -> list[Any]:
    from sandbox.backends.docker import owner_is_alive

    every = client.containers.list(all=True, filters={"label": labels.ATTEMPT}, ignore_removed=True)
    return [c for c in every if not owner_is_alive(c.labels or {})]


def _check_registry(root: Path) -> dict[str, Any]:
    for name in (
        "run.json",
        "plan.json",
        "events.jsonl",
        "best.json",
        "best_config.json",
        "aggregates.json",
        "report/summary.md",
    ):
        assert (root / name).is_file(), name
    best = json.loads((root / "best.json").read_text())
    assert best["scored_by"] == "host" and best["split"] == "test"
    records = [json.loads((root / "attempts" / f"{n:04d}" / "attempt.json").read_text()) for n in best["attempts"]["test"]]
    assert len(records) == len(best["attempts"]["train"])  # one test job per seed
    assert all(r["kind"] == "test" and r["score_split"] == "test" for r in records)
    assert best["value"] == pytest.approx(sum(r["host_score"] for r in records) / len(records))
    assert best["value"] > 0.8
    for number in best["attempts"]["train"]:
        assert (root / "attempts" / f"{number:04d}" / "outputs" / "out" / "model.pt").is_file()
    return best


def test_start_finishes_within_budget_with_a_complete_registry(tmp_path: Path, docker_client: Any) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [
            *CONTROLLER,
            "start",
            "--budget",
            "3m",
            "--agent",
            "offline",
            "--task",
            "digits",
            "--topic",
            "data augmentation for small digit datasets",
            "--offline",
            "--corpus",
            str(BUILTIN_CORPUS),
            "--runs-dir",
            str(tmp_path),
            "--run-id",
            "e2e",
        ],
        capture_output=True,
        text=True,
        timeout=180 + 120,
        check=False,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert elapsed < 180 + SLACK_S, elapsed
    root = tmp_path / "e2e"
    _check_registry(root)
    state = json.loads((root / "run.json").read_text())
    assert state["status"] == "finished" and state["totals"]["attempts"] >= 10
    # the research front-end ran first, and the loop ran its plan
    for name in (
        "literature/papers.jsonl",
        "literature/summaries.jsonl",
        "literature/novelty.json",
        "planning/session.jsonl",
    ):
        assert (root / name).is_file(), name
    plan = Plan.model_validate_json((root / "plan.json").read_text())
    journal = json.loads((root / "journal.json").read_text())
    assert journal and [o["hypothesis"]["id"] for o in journal] == [h.id for h in plan.hypotheses][: len(journal)]
    assert any(h.citations for h in plan.hypotheses)
    assert _containers(docker_client, "e2e") == []
    assert _orphans(docker_client) == []
    # the CLI views read the registry
    view = subprocess.run(
        [*CONTROLLER, "attempts", "e2e", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "train" in view.stdout and "guard" in view.stdout
    first_train = min(
        json.loads(p.read_text())["number"]
        for p in (root / "attempts").glob("*/attempt.json")
        if json.loads(p.read_text())["kind"] == "train"
    )
    logs = subprocess.run(
        [*CONTROLLER, "logs", "e2e", "--attempt", str(first_train), "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "samples_per_s" in logs.stdout
    status = subprocess.run(
        [*CONTROLLER, "status", "e2e", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "finished" in status.stdout and "best so far" in status.stdout
    # the best configuration reproduces: same data, trunk, modules and seeds; inside the recorded CI
    _assert_rerun_reproduces(tmp_path, "e2e")


def _assert_rerun_reproduces(runs: Path, run_id: str) -> dict[str, Any]:
    proc = subprocess.run(
        [*CONTROLLER, "rerun", run_id, "--runs-dir", str(runs)], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, (proc.stdout[-1500:], proc.stderr[-3000:])
    assert "reproduced" in proc.stdout
    verdict = json.loads((runs / f"{run_id}-rerun-1" / "rerun.json").read_text())
    assert verdict["inside_recorded_ci"] is True
    assert verdict["recorded"]["ci_low"] <= verdict["rerun"]["mean"] <= verdict["recorded"]["ci_high"]
    return verdict


def test_rerun_rebuilds_exactly_what_an_imagefolder_run_trained(tmp_path: Path, docker_client: Any) -> None:
    from tests.controller.test_datasets import write_imagefolder

    images = tmp_path / "images"
    write_imagefolder(images, size=28)  # 28x28 RGB: not the digits shape, not its normalisation
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            *CONTROLLER,
            "start",
            "--budget",
            "150s",
            "--seeds",
            "2",
            "--dataset",
            f"imagefolder:{images}",
            "--runs-dir",
            str(runs),
            "--run-id",
            "img",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = json.loads((runs / "img" / "best.json").read_text())
    assert best["value"] is not None, best
    config = json.loads((runs / "img" / "best_config.json").read_text())
    assert config["dataset"] == f"imagefolder:{images}" and config["input_shape"] == [3, 32, 32]
    assert len(config["normalisation"]["mean"]) == 3 and config["model"]["arch"] == "cnn"
    _assert_rerun_reproduces(runs, "img")


def test_kill_9_then_resume_loses_nothing_and_leaks_nothing(tmp_path: Path, docker_client: Any) -> None:
    proc = subprocess.Popen(
        [*CONTROLLER, "start", "--budget", "150s", "--seeds", "2", "--runs-dir", str(tmp_path), "--run-id", "crash"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = tmp_path / "crash"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(list((root / "attempts").glob("[0-9][0-9][0-9][0-9]"))) >= 6:
            break
        time.sleep(0.5)
    time.sleep(1.5)  # be inside an attempt, most likely
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: (p / "attempt.json").read_bytes() for p in (root / "attempts").glob("[0-9][0-9][0-9][0-9]")}
    assert len(before) >= 6
    keys_before = {json.loads(v)["key"] for v in before.values()}
    resumed = subprocess.run(
        [*CONTROLLER, "resume", "crash", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = {p.name: (p / "attempt.json").read_bytes() for p in (root / "attempts").glob("[0-9][0-9][0-9][0-9]")}
    for name, data in before.items():
        assert after[name] == data  # every finished attempt kept, untouched
    keys_after = [json.loads(v)["key"] for v in after.values()]
    assert len(keys_after) == len(set(keys_after))  # none rerun
    assert keys_before <= set(keys_after)
    state = json.loads((root / "run.json").read_text())
    assert state["status"] == "finished" and state["resumes"] == 1
    _check_registry(root)
    assert _containers(docker_client, "crash") == []
    assert _pool_containers_of(docker_client, proc.pid) == []


def test_sigterm_kills_the_containers_and_leaves_the_run_resumable(tmp_path: Path, docker_client: Any) -> None:
    proc = subprocess.Popen(
        [*CONTROLLER, "start", "--budget", "5m", "--runs-dir", str(tmp_path), "--run-id", "term"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    root = tmp_path / "term"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((root / "attempts").glob("[0-9][0-9][0-9][0-9]"))) < 3:
        time.sleep(0.3)
    while time.monotonic() < deadline and not _containers(docker_client, "term"):
        time.sleep(0.1)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert time.monotonic() - sent < 30
    assert "controller resume term" in stderr
    state = json.loads((root / "run.json").read_text())
    assert state["status"] == "interrupted"
    assert _containers(docker_client, "term") == []
    assert not list((root / "attempts").glob(".*.tmp"))  # the killed attempt was not recorded
