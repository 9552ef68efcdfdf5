"""Code -> guard -> repair: one generated module at a time, with rollback.

The agent writes a module for a slot; the guard compiles, imports and smoke-tests it in a
disposable container; a failure goes back to the agent as a structured exception (stage,
type, message, frames with generated ones marked, trimmed stderr) for a bounded number of
repair rounds; when they run out the slot rolls back to the last module that passed.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import structlog

from controller.agents.base import Agent, GuardFailure, trim
from controller.attempts import AttemptRunner, JobSpec, harness
from controller.data import RunData
from controller.matrix import baseline_modules
from controller.plan import Hypothesis, Matrix, ModuleCode
from controller.registry import AttemptRecord
from controller.store import guard_key
from controller.tasks import Task
from sandbox.events import ExceptionEvent
from sandbox.policy import Policy
from sandbox.results import Status

SMOKE_OUTPUT = "out/smoke.json"
"""Where the harness writes what the trusted smoke check observed."""


def generated_tests_path(module_file: str) -> str:
    """Where a module's own tests sit in the guard's workspace: gen/head.py -> gen/test_head.py."""
    folder, _, name = module_file.rpartition("/")
    return f"{folder}/test_{name}" if folder else f"test_{name}"


class Coder:
    """Writes, guards and repairs modules; remembers each slot's last good one."""

    def __init__(
        self,
        task: Task,
        agent: Agent,
        attempts: AttemptRunner,
        data: RunData,
        policy: Policy,
        charge_agent: Callable[[], None],
    ) -> None:
        self.task, self.agent, self.attempts, self.data, self.policy = task, agent, attempts, data, policy
        self.charge_agent = charge_agent
        self.last_good = baseline_modules(task)
        self.log = structlog.get_logger("sandlab.coder")

    def write(self, slot: str, hypothesis: Hypothesis) -> ModuleCode:
        """Write, guard and repair one module; roll back when repairs run out."""
        module = self.agent.write_module(self.task, slot, hypothesis)
        self.charge_agent()
        return self.settle(slot, hypothesis, module, self.attempts.ledger.limits.repairs_per_module)

    def repair_after_training(self, hypothesis: Hypothesis, module: ModuleCode, record: AttemptRecord) -> ModuleCode:
        """A module that passed the guard and then crashed a training job (a frame of its file
        in the traceback): repaired from that traceback, guarded again, rolled back when the
        repairs run out, as a guard failure would be."""
        slot = module.slot
        failure = self.guard_failure(record).model_copy(update={"stage": "train"})
        self.attempts.progress(f"  training crashed in {slot} ({failure.exception_type}); repairing")
        repaired = self._repair(slot, hypothesis, module, failure)
        if repaired.origin == "rollback":
            return self._rollback(slot)
        return self.settle(slot, hypothesis, repaired, self.attempts.ledger.limits.repairs_per_module - 1)

    def settle(self, slot: str, hypothesis: Hypothesis, module: ModuleCode, repairs: int) -> ModuleCode:
        """Guard a module, repairing it from each failure up to `repairs` times."""
        for round_ in range(max(repairs, 0) + 1):
            record = self.guard(slot, module)
            if record.status == Status.ok:
                self.last_good[slot] = module
                return module
            if round_ >= repairs:
                break
            failure = self.guard_failure(record)
            self.attempts.progress(f"  guard failed for {slot} at {failure.stage}: {failure.exception_type}; repairing")
            module = self._repair(slot, hypothesis, module, failure)
            if module.origin == "rollback":
                break
        return self._rollback(slot)

    def _repair(self, slot: str, hypothesis: Hypothesis, module: ModuleCode, failure: GuardFailure) -> ModuleCode:
        """One repair round: the agent's fix (or its rollback), charged and counted."""
        repaired = self.agent.repair(self.task, slot, hypothesis, module, failure, self.last_good[slot])
        self.charge_agent()
        self.attempts.state.totals.repairs += 1
        return repaired

    def _rollback(self, slot: str) -> ModuleCode:
        self.attempts.state.totals.rollbacks += 1
        self.log.warning("module.rollback", slot=slot, to=self.last_good[slot].origin)
        self.attempts.progress(f"  {slot}: rolled back to the last module that passed the guard")
        return ModuleCode(slot=slot, code=self.last_good[slot].code, origin="rollback")

    def culprit(self, record: AttemptRecord, modules: dict[str, ModuleCode]) -> ModuleCode | None:
        """The generated module a failed job crashed in: the innermost traceback frame that
        lies in one of `modules`' files (None: the crash was not in generated code)."""
        exc = next((e for e in reversed(record.result.events) if isinstance(e, ExceptionEvent)), None)
        files = {self.task.slots[slot].file: module for slot, module in modules.items()}
        for frame in reversed(exc.frames if exc else []):
            if frame.generated:
                for path, module in files.items():
                    if frame.file == path or frame.file.endswith("/" + path):
                        return module
        return None

    def guard(self, slot: str, module: ModuleCode) -> AttemptRecord:
        """Compile, import and smoke-test a module; the smoke verdict is read back by the host."""
        spec = self.task.slots[slot]
        expected = self.task.smoke_expectation(slot, self.data.shape())
        command = harness("guard", "--module", spec.file, "--entry", spec.entry, "--smoke", spec.smoke)
        command += ["--expect", json.dumps(expected)]
        files = {**self.task.code(), spec.file: module.code.encode(), **self.task.smoke_files(self.data.shape())}
        if module.tests:  # the agent's own tests, after the trusted smoke check (which they cannot replace)
            tests = generated_tests_path(spec.file)
            command, files = [*command, "--tests", tests], {**files, tests: module.tests.encode()}
        return self.attempts.execute(
            JobSpec(
                key=guard_key(slot, module.guard_digest),
                kind="guard",
                policy=self.policy,
                timeout_s=self.task.timeouts.guard,
                command=command,
                files=files,
                slot=slot,
                module=module,
                required_outputs={SMOKE_OUTPUT: "smoke_unverified"},
                scorer=lambda result, outputs: self.task.check_smoke(outputs / SMOKE_OUTPUT, expected),
            )
        )

    @staticmethod
    def guard_failure(record: AttemptRecord) -> GuardFailure:
        result = record.result
        exc = next((e for e in reversed(result.events) if isinstance(e, ExceptionEvent)), None)
        stage = exc.stage if exc else ("timeout" if result.status == Status.timeout else record.failed_stage or "host")
        frames = "\n".join(
            f"{'>' if f.generated else ' '} {f.file}:{f.line} in {f.function}: {f.source}"
            for f in (exc.frames if exc else [])
        )
        return GuardFailure(
            stage=stage,
            exception_type=exc.type if exc else "",
            message=exc.message if exc else (record.reason or ""),
            traceback=frames,
            stderr_tail=trim(result.stderr),
            status=record.status,
        )

    def guarded_suites(self, matrix: Matrix) -> dict[str, dict[str, ModuleCode]]:
        """Each ablated slot's suite modules that pass the guard (the rest are skipped, said so)."""
        suites: dict[str, dict[str, ModuleCode]] = {}
        for dimension in matrix.ablate:
            if dimension not in self.task.slots:
                continue
            for name, code in self.task.suite_code(dimension).items():
                module = ModuleCode(slot=dimension, code=code, origin=f"suite:{name}")
                if self.guard(dimension, module).status == Status.ok:
                    suites.setdefault(dimension, {})[name] = module
                else:
                    self.attempts.progress(f"  suite member {dimension}={name} failed the guard; skipped")
        return suites
