"""Harness entry point: `python3 -m sandbox.harness guard|run ...`.

guard  load the (trusted) smoke check, then compile, import and smoke-test the module's
       entry point on a tiny input. The check is resolved before the untrusted import, so
       the module cannot replace it; what the check observed (shapes, dtypes) is written to
       out/smoke.json for the host to verify. Each stage is its own event, so the repair
       loop knows which one failed. This is a bug filter, not a security boundary: the
       module runs in the same process and could still forge the file.
       With --tests, the agent's own pytest file runs last, in a separate pytest process
       that starts only after the smoke check passed and its observation was written: a
       generated test can fail the guard, never skip or pass the smoke check.
run    call a job function with a JSON config; it reports metrics through the emitter.

Exit status: 0 when every stage passed, 1 when one failed (the events say which).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from sandbox.harness.emit import Emitter


class StageFailedError(Exception):
    """Raised after a stage failure has been reported, to stop the remaining stages."""


def _run_stage(emitter: Emitter, stage: str, action: Callable[[], Any]) -> Any:
    emitter.stage(stage, "started")
    start = time.perf_counter()
    try:
        result = action()
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        emitter.exception(exc, stage)
        emitter.stage(stage, "failed", time.perf_counter() - start)
        raise StageFailedError(stage) from exc
    emitter.stage(stage, "passed", time.perf_counter() - start)
    return result


def _compile(path: Path) -> None:
    # compile() rather than py_compile: nothing is written, the workspace may be read-only.
    compile(path.read_bytes(), str(path), "exec", dont_inherit=True)


def _import_file(path: Path) -> ModuleType:
    name = f"sandlab_generated_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        msg = f"cannot import {path}"
        raise ImportError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _resolve(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    if not attr:
        msg = f"expected module:function, got {target!r}"
        raise ValueError(msg)
    func = getattr(importlib.import_module(module_name), attr)
    if not callable(func):
        msg = f"{target} is not callable"
        raise TypeError(msg)
    return func  # type: ignore[no-any-return]


SMOKE_OUTPUT = "out/smoke.json"


def guard(args: argparse.Namespace, emitter: Emitter) -> None:
    """Load the smoke check, then compile, import and smoke-test one generated module."""
    path = (args.workspace / args.module).resolve()
    check = _run_stage(emitter, "load", lambda: _resolve(args.smoke)) if args.smoke else None
    _run_stage(emitter, "compile", lambda: _compile(path))
    module = _run_stage(emitter, "import", lambda: _import_file(path))

    def smoke() -> Any:
        entry = getattr(module, args.entry, None)
        if entry is None:
            msg = f"{args.module} defines no {args.entry!r}; the slot requires it"
            raise AttributeError(msg)
        observed = check(entry) if check is not None else (entry() if callable(entry) else entry)
        if isinstance(observed, dict):
            target = args.workspace / SMOKE_OUTPUT
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(observed))
        expected = json.loads(args.expect) if args.expect else {}
        seen = observed if isinstance(observed, dict) else {}
        wrong = {k: seen.get(k) for k, v in expected.items() if seen.get(k) != v}
        if wrong:  # decided here, before any generated test runs: no test can rescue it
            msg = f"the smoke check observed {wrong}, the task expects {expected}"
            raise SmokeMismatchError(msg)
        return observed

    _run_stage(emitter, "smoke", smoke)
    if args.tests:
        _run_stage(emitter, "tests", lambda: _generated_tests(args.workspace, args.tests))


class SmokeMismatchError(ValueError):
    """The smoke check ran but observed what the task does not expect (shape, dtype, ...)."""


class GeneratedTestsFailedError(AssertionError):
    """The agent's own tests of its module failed (pytest's summary is the message)."""


PYTEST_SUMMARY_LINES = 40
PYTEST_SUMMARY_CHARS = 6000


def _generated_tests(workspace: Path, tests: str) -> None:
    """Run the agent's pytest file against its module; raise with pytest's summary if it fails.

    Exit 5 (the file holds no test) passes: the trusted smoke check already did."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short", "-rfE", tests]
    proc = subprocess.run(command, cwd=workspace, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 5):
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        summary = "\n".join(lines[-PYTEST_SUMMARY_LINES:])[-PYTEST_SUMMARY_CHARS:]
        msg = f"the module's own tests ({tests}) failed, pytest exit {proc.returncode}:\n{summary}"
        raise GeneratedTestsFailedError(msg)


def run_job(args: argparse.Namespace, emitter: Emitter) -> None:
    """Call a job function with its config and the emitter as reporter."""
    config = json.loads((args.workspace / args.config).read_text()) if args.config else {}
    job = _run_stage(emitter, "load", lambda: _resolve(args.job))
    _run_stage(emitter, "run", lambda: job(config, emitter))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m sandbox.harness")
    parser.add_argument("--workspace", type=Path, default=Path.cwd())
    parser.add_argument(
        "--generated",
        action="append",
        default=None,
        help="folder of generated code, relative to the workspace (default gen)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("guard", help="compile, import and smoke-test a generated module")
    g.add_argument("--module", required=True, help="path of the module in the workspace")
    g.add_argument("--entry", required=True, help="name the slot requires the module to define")
    g.add_argument("--smoke", default=None, help="module:function called with the entry point")
    g.add_argument("--expect", default=None, help="JSON: what the smoke check must observe (checked before tests)")
    g.add_argument("--tests", default=None, help="the agent's pytest file, run after the smoke check passed")
    r = sub.add_parser("run", help="run a job function with a JSON config")
    r.add_argument("--job", required=True, help="module:function taking (config, reporter)")
    r.add_argument("--config", default=None, help="JSON file in the workspace")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one harness command; return its exit status."""
    sys.dont_write_bytecode = True
    args = _parser().parse_args(argv)
    args.workspace = args.workspace.resolve()
    sys.path.insert(0, str(args.workspace))
    emitter = Emitter(args.workspace, tuple(args.generated or ["gen"]))
    start = time.perf_counter()
    status = "ok"
    try:
        (guard if args.command == "guard" else run_job)(args, emitter)
    except StageFailedError:
        status = "error"
    finally:
        emitter.finished(status, time.perf_counter() - start)
        emitter.close()
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
