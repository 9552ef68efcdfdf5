"""The app: every command registered in one place, and failures mapped to one line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer

import controller.cli
from controller.cli import main
from controller.cli.main import COMMANDS, app
from controller.store import RunStore

CLI_DIR = Path(controller.cli.__file__).parent
ENGINE_MODULES = ("docker", "sandbox.backends.docker")
EXPECTED = {
    "start",
    "plan",
    "resume",
    "stop",
    "rerun",
    "status",
    "attempts",
    "logs",
    "report",
    "doctor",
    "reap",
    "sandbox exec",
    "images build",
}


def _command_paths(group: typer.core.TyperGroup, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, command in group.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            paths |= _command_paths(command, f"{prefix}{name} ")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def test_every_command_of_the_contract_is_registered() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert _command_paths(group) == EXPECTED


def test_command_modules_register_nothing_themselves() -> None:
    for path in CLI_DIR.glob("*.py"):
        if path.name == "main.py":
            continue
        text = path.read_text()
        assert "Typer(" not in text and ".command(" not in text, f"{path.name} registers commands itself"
    registered = {command.__name__ for _, commands in COMMANDS for command in commands}
    assert registered == {"start", "plan", "resume", "stop", "rerun", "status", "attempts", "logs", "report", "doctor", "reap"}


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_only_the_sandbox_module_imports_engine_code() -> None:
    importers = {
        path.name
        for path in CLI_DIR.glob("*.py")
        if any(m == e or m.startswith(f"{e}.") for m in _imported_modules(path) for e in ENGINE_MODULES)
    }
    assert importers == {"sandbox.py"}


def test_no_command_reads_events_from_attempt_records() -> None:
    # Events live in each attempt's events.jsonl, not in attempt.json; the table uses failed_stage.
    for path in CLI_DIR.glob("*.py"):
        assert "result.events" not in path.read_text(), path.name


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "nope", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run 'nope'") and err.count("\n") == 1


def test_a_bug_is_one_line_that_says_how_to_get_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(RunStore, "open", broken)
    monkeypatch.delenv("SANDLAB_DEBUG", raising=False)
    assert main(["stop", "x", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("internal error: KeyError") and "SANDLAB_DEBUG=1" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [[], ["sandbox"], ["images"]])
def test_a_bare_group_prints_its_help_once_and_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("Usage:") == 1
