"""sandbox exec's exit statuses on the local backend, and the best-effort reap before a run."""

from __future__ import annotations

import json

import pytest

from controller.cli.sandbox import reap_for_run
from tests.controller.cli.support import controller, one_line_error

LOCAL = ("sandbox", "exec", "--backend", "local", "--allow-weaker")


def test_exec_ok_passes_output_through_and_exits_0() -> None:
    proc = controller(*LOCAL, "--", "python3", "-c", "print(6 * 7)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "42\n"


def test_exec_json_of_a_failed_command_is_one_attempt_result_and_exit_1() -> None:
    proc = controller(*LOCAL, "--json", "--", "python3", "-c", "raise SystemExit(3)")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "error" and result["exit_code"] == 3


def test_unknown_backend_is_one_line_and_exit_2() -> None:
    proc = controller("sandbox", "exec", "--backend", "podman", "--", "true")
    assert proc.returncode == 2
    assert "use docker or local" in one_line_error(proc)


def test_allow_weaker_with_the_docker_backend_is_one_line_before_any_job() -> None:
    proc = controller("sandbox", "exec", "--allow-weaker", "--", "python3", "-c", "print('ran')")
    assert proc.returncode == 2 and "ran" not in proc.stdout
    assert "--allow-weaker is for --backend local" in one_line_error(proc)


@pytest.mark.parametrize(("gpus", "said"), [("0,99", "no GPU"), ("64", "--gpus 64: this host has")])
def test_gpus_this_host_does_not_have_are_one_line_before_any_job(gpus: str, said: str) -> None:
    proc = controller(*LOCAL, "--gpus", gpus, "--", "python3", "-c", "print('ran')")
    assert proc.returncode == 2 and "ran" not in proc.stdout
    line = one_line_error(proc)
    assert said in line and "leave --gpus out" in line


def test_reap_before_a_run_warns_with_the_reason_when_the_engine_is_away(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    reap_for_run(None)  # never raises: the sandbox itself reports an unusable engine, with its fix
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "could not reap" in captured.err and "nonexistent" in captured.err
    reap_for_run(None, "local")  # no engine to reap on the local backend: nothing to say
    assert capsys.readouterr().err == ""
