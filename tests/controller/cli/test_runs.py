"""start, resume, stop: bad input is one line and exit 2, and nothing is created."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from controller.cli import main
from controller.cli import runs as runs_cli
from controller.store import RunStore
from tests.controller.cli.support import OTHER_RUN_ID, RUN_ID, controller, one_line_error


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--iteration-wall", "soon"),
        ("--iteration-gpu-time", "-5m"),
        ("--iteration-cost", "lots"),
        ("--iteration-cost", "0usd"),
        ("--iteration-tokens", "many"),
        ("--iteration-tokens", "0"),
        ("--iteration-repairs", "-1"),
        ("--iteration-attempts", "0"),
    ],
)
def test_a_bad_iteration_limit_is_one_line_naming_the_flag(tmp_path: Path, flag: str, value: str) -> None:
    proc = controller("start", f"{flag}={value}", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    assert flag in one_line_error(proc)
    assert not any(tmp_path.iterdir())


def test_one_seed_is_refused_with_the_fix(tmp_path: Path) -> None:
    proc = controller("start", "--seeds", "1", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "--seeds 2 or more" in one_line_error(proc)
    assert not any(tmp_path.iterdir())


class _NoSandbox:
    name = "none"
    seals_host_files = True

    def close(self) -> None:
        pass


def test_start_stores_the_iteration_limits_given_and_only_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[RunStore] = []

    def fake_loop(store: RunStore, *, resume: bool = False) -> int:
        started.append(store)
        return 0

    monkeypatch.setattr(runs_cli, "_run_loop", fake_loop)
    monkeypatch.setattr(runs_cli, "reap_for_run", lambda run_id, backend: None)
    monkeypatch.setattr("controller.wiring.make_sandbox", lambda config: _NoSandbox())
    args = ["start", "--budget", "10m", "--seeds", "2", "--run-id", "limits", "--runs-dir", str(tmp_path)]
    code = main([*args, "--iteration-wall", "15m", "--iteration-cost", "0.5usd", "--iteration-repairs", "0"])
    assert code == 0
    assert [s.root.name for s in started] == ["limits"]
    config = json.loads((tmp_path / "limits" / "run.json").read_text())["config"]
    assert config["iteration_limits"] == {"wall_s": 900.0, "cost_usd": 0.5, "repairs_per_module": 0.0}
    assert config["seeds"] == [0, 1]


@pytest.mark.parametrize(("flags", "expected"), [([], True), (["--mlflow"], True), (["--no-mlflow"], False)])
def test_start_stores_whether_to_log_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], expected: bool
) -> None:
    monkeypatch.setattr(runs_cli, "_run_loop", lambda store, *, resume=False: 0)
    monkeypatch.setattr(runs_cli, "reap_for_run", lambda run_id, backend: None)
    monkeypatch.setattr("controller.wiring.make_sandbox", lambda config: _NoSandbox())
    args = ["start", "--budget", "10m", "--seeds", "2", "--run-id", "tracked", "--runs-dir", str(tmp_path)]
    assert main([*args, *flags]) == 0
    config = json.loads((tmp_path / "tracked" / "run.json").read_text())["config"]
    assert config["mlflow"] is expected


def test_stop_of_a_finished_run_is_one_line(runs_dir: Path) -> None:
    proc = controller("stop", RUN_ID, "--runs-dir", str(runs_dir))
    assert proc.returncode == 2
    assert "not running (status finished)" in one_line_error(proc)


def test_stop_of_a_running_run_asks_it_to_stop(runs_dir: Path) -> None:
    proc = controller("stop", OTHER_RUN_ID, "--runs-dir", str(runs_dir))
    assert proc.returncode == 0, proc.stderr
    assert RunStore.open(runs_dir, OTHER_RUN_ID).stop_requested()


def _orphan(runs_dir: Path) -> None:
    """OTHER_RUN_ID as a kill -9 leaves it: status running, its owner a process that has exited."""
    store = RunStore.open(runs_dir, OTHER_RUN_ID)
    state = store.load_state()
    dead = subprocess.Popen(["true"])
    dead.wait()
    state.owner_pid = dead.pid
    store.save_state(state)


def test_an_orphaned_run_is_shown_as_such_and_stop_points_at_resume(runs_dir: Path) -> None:
    _orphan(runs_dir)
    proc = controller("stop", OTHER_RUN_ID, "--runs-dir", str(runs_dir))
    assert proc.returncode == 2
    assert "orphaned" in one_line_error(proc) and f"controller resume {OTHER_RUN_ID}" in one_line_error(proc)
    assert not RunStore.open(runs_dir, OTHER_RUN_ID).stop_requested()
    listed = controller("status", "--runs-dir", str(runs_dir))
    assert listed.returncode == 0 and "orphaned" in listed.stdout
    panel = controller("status", OTHER_RUN_ID, "--once", "--runs-dir", str(runs_dir))
    assert panel.returncode == 0 and f"controller resume {OTHER_RUN_ID}" in " ".join(panel.stdout.split())


def test_resume_of_a_finished_run_points_at_its_report(runs_dir: Path) -> None:
    proc = controller("resume", RUN_ID, "--runs-dir", str(runs_dir))
    assert proc.returncode == 2
    assert f"controller report {RUN_ID}" in one_line_error(proc)
