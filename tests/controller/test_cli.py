"""The command line as users meet it: exit statuses and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CONTROLLER = [sys.executable, "-m", "controller"]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CONTROLLER, *args], capture_output=True, text=True, timeout=timeout, check=False)


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    return lines[0]


def test_unknown_flag_is_one_line_and_exit_2() -> None:
    proc = cli("--bogus")
    assert proc.returncode == 2
    assert "--bogus" in _one_line_error(proc)


def test_unknown_policy_is_one_line_and_exit_2() -> None:
    proc = cli("sandbox", "exec", "--policy", "no-such-policy", "--", "true")
    assert proc.returncode == 2
    assert "use one of" in _one_line_error(proc)


def test_bad_timeout_is_one_line_and_exit_2() -> None:
    proc = cli("sandbox", "exec", "--timeout", "soon", "--", "true")
    assert proc.returncode == 2
    assert "90s" in _one_line_error(proc)


def test_unreachable_engine_is_one_line_and_exit_2() -> None:
    env_cmd = ["env", "DOCKER_HOST=unix:///nonexistent/docker.sock", *CONTROLLER, "sandbox", "exec", "--", "true"]
    proc = subprocess.run(env_cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "controller doctor" in _one_line_error(proc)


def test_doctor_with_unreachable_engine_exits_1_with_fixes() -> None:
    env_cmd = ["env", "DOCKER_HOST=unix:///nonexistent/docker.sock", "COLUMNS=200", *CONTROLLER, "doctor"]
    proc = subprocess.run(env_cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "engine" in proc.stdout and "fail" in proc.stdout and "start dockerd" in proc.stdout


@pytest.mark.docker
def test_exec_json_error_prints_an_attempt_result_and_exits_1() -> None:
    proc = cli("sandbox", "exec", "--json", "--", "python3", "-c", "raise ValueError('x')")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "error" and result["exit_code"] == 1
    assert "ValueError: x" in result["stderr"]
    assert result["limits"]["network"] == "none" and result["image"] == "sandlab-runner:latest"
    for key in ("duration_s", "started_at", "truncated", "events", "usage", "container_id"):
        assert key in result


@pytest.mark.docker
def test_exec_ok_exits_0_and_passes_output_through() -> None:
    proc = cli("sandbox", "exec", "--", "python3", "-c", "print(6 * 7)")
    assert proc.returncode == 0 and proc.stdout == "42\n"


@pytest.mark.docker
def test_exec_memory_bomb_under_default_is_oom_and_exits_1() -> None:
    proc = cli("sandbox", "exec", "--json", "--", "python3", "-c", "x = []\nwhile True: x.append(bytearray(10**8))")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["status"] == "oom"


@pytest.mark.docker
def test_doctor_is_green_here_except_gpus() -> None:
    proc = subprocess.run(
        ["env", "COLUMNS=250", *CONTROLLER, "doctor"], capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stdout
    assert "sandbox container" in proc.stdout and "GPUs (host)" in proc.stdout


def test_local_backend_without_allow_weaker_is_one_line_and_exit_2() -> None:
    proc = cli("sandbox", "exec", "--backend", "local", "--", "python3", "-c", "print(1)")
    assert proc.returncode == 2
    assert "--allow-weaker" in _one_line_error(proc)


def test_unknown_task_is_one_line_and_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = cli("start", "--task", "nope", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "digits" in _one_line_error(proc)
    assert not any(tmp_path.iterdir())  # nothing created


def test_gpus_without_gpus_is_one_line_and_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = cli("start", "--gpus", "1", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "GPU" in _one_line_error(proc)
