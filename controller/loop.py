"""The research loop: plan -> code -> guard -> repair -> run -> analyze -> refine -> report.

Every job goes through `execute`, which is memoized by a deterministic key: on resume the
loop simply runs again from the top, finished attempts are read back instead of rerun,
and a deterministic agent (or the LLM cache) makes the same decisions. What was running
when the controller died is run again; nothing that finished is lost or repeated.
"""

from __future__ import annotations

import json
import platform
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from controller.agents.base import Agent, GuardFailure, IterationOutcome
from controller.budget import (
    AdmissionRefusedError,
    Budget,
    IterationLimitError,
    IterationLimits,
    IterationMeter,
)
from controller.datasets import DatasetSpec, resolve_dataset
from controller.errors import BudgetExceededError, ControllerError
from controller.plan import Arm, Hypothesis, ModuleCode, Plan
from controller.registry import AttemptKind, AttemptRecord, BestSoFar, LimitHit, RunState, RunStore
from controller.runlog import configure_run_logging
from controller.scheduler import ResourcePool
from controller.scoring import InvalidPredictionsError, accuracy, is_suspect, load_predictions
from controller.stats import ArmStats, compare, summarize
from controller.tasks import Task
from sandbox.base import Job, Sandbox
from sandbox.events import ExceptionEvent, MetricEvent
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Status

Progress = Callable[[str], None]
RAW_DATA_MOUNT = "/data/raw"
"""Where the prepare container sees the dataset (read-only)."""
PUBLIC_DATA_MOUNT = "/data/public"
"""Where training containers see train and val (read-only)."""
INFRA_RETRIES = 2
"""Times a job is retried after an infra_error (never after a failure of the code)."""
INFRA_RETRY_PAUSE_S = 2.0
TRIM_CHARS = 4000
"""How much of a log the agent sees (head and tail); the full text stays on disk."""


class InterruptedRunError(ControllerError):
    """SIGINT/SIGTERM: containers were killed; the run is left resumable."""


class StopRequestedError(ControllerError):
    """`controller stop` asked for a graceful stop."""


def harness(*args: str) -> list[str]:
    """argv for the in-container harness (`python3 -m sandbox.harness ...`)."""
    return ["python3", "-m", "sandbox.harness", *args]


def trim(text: str, limit: int = TRIM_CHARS) -> str:
    """Head and tail of a long text, saying how much was cut (for prompts only)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


@dataclass(frozen=True)
class StagePolicies:
    """Which policy each kind of job runs under."""

    guard: Policy
    train: Policy
    evaluate: Policy


@dataclass
class LoopContext:
    """Everything one loop run works with (injected, so tests can use fakes)."""

    store: RunStore
    state: RunState
    sandbox: Sandbox
    agent: Agent
    task: Task
    policies: StagePolicies
    budget: Budget
    limits: IterationLimits
    progress: Progress = print
    resources: ResourcePool | None = None
    """Shared CPUs, memory and GPU ids; None runs jobs without accounting (tests)."""
    parallel: int = 1
    """Training jobs of one iteration run at most this many at once."""


class ResearchLoop:
    """Runs one research run to completion, interruption or budget."""

    def __init__(self, ctx: LoopContext) -> None:
        self.ctx = ctx
        self.store, self.state, self.task = ctx.store, ctx.state, ctx.task
        configure_run_logging(ctx.store.root / "events.jsonl")
        self.log = structlog.get_logger("sandlab.loop").bind(run_id=ctx.state.run_id)
        self.index = ctx.store.attempt_index()
        self.last_good: dict[str, ModuleCode] = {
            slot: ModuleCode(slot=slot, code=ctx.task.baseline_code(slot), origin="baseline") for slot in ctx.task.slots
        }
        self.arms: dict[str, Arm] = {}
        self.meta: dict[str, Any] = {}
        self.scores: dict[str, dict[int, AttemptRecord]] = {}
        self.history: list[IterationOutcome] = []
        self.iteration = 0
        self.meter: IterationMeter | None = None
        self._interrupted = threading.Event()
        self._deadline = threading.Event()
        self._timer: threading.Timer | None = None
        self._lock = threading.RLock()
        self._next_number = 0

    # -- control from other threads -----------------------------------------------------

    def interrupt(self) -> None:
        """SIGINT/SIGTERM: kill running containers; the loop unwinds as `interrupted`."""
        self._interrupted.set()
        self.ctx.sandbox.kill_all()

    def _deadline_reached(self) -> None:
        self._deadline.set()
        killed = self.ctx.sandbox.kill_all()
        self.log.warning("budget.deadline", killed_containers=killed)

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> RunState:
        """Plan, iterate until a stopping rule, then report. Returns the final state."""
        self._timer = threading.Timer(max(self.ctx.budget.remaining_s(), 0), self._deadline_reached)
        self._timer.daemon = True
        self._timer.start()
        try:
            self._set_stage("prepare")
            self.prepare_data()
            self.record_environment()
            plan = self.make_plan()
            hypothesis: Hypothesis | None = plan.hypotheses[0]
            while hypothesis is not None and not self.should_stop(plan):
                self.history.append(self.iterate(hypothesis))
                self.store.write("journal.json", [o.model_dump(mode="json") for o in self.history])
                hypothesis = self.ctx.agent.refine(self.task, plan, self.history)
                self._charge_agent()
            status = "stopped" if self.store.stop_requested() else "finished"
        except InterruptedRunError:
            self.state.status = "interrupted"
            self.state.message = "interrupted: containers killed; `controller resume` continues"
            self._save()
            raise
        except StopRequestedError:
            status = "stopped"
        except BudgetExceededError as exc:
            self._limit("budget", str(exc))
            status = "finished"
        finally:
            if self._timer is not None:
                self._timer.cancel()
        self.state.status = status  # type: ignore[assignment]
        self.finalize()
        self.state.stage = "done"
        self._save()
        return self.state

    def should_stop(self, plan: Plan) -> bool:
        """Stopping rules: iterations, patience, target, budget, stop request."""
        rules = plan.stopping
        reasons = []
        if self.iteration >= rules.max_iterations:
            reasons.append(f"reached {rules.max_iterations} iterations")
        recent = self.history[-rules.patience :]
        if len(recent) == rules.patience and not any(o.supported for o in recent):
            reasons.append(f"{rules.patience} iterations without a supported hypothesis")
        if rules.target is not None and self.state.best and self.state.best.mean >= rules.target:
            reasons.append(f"target {rules.target} reached")
        if self._deadline.is_set() or self.ctx.budget.expired():
            reasons.append("wall-clock budget spent")
        elif self.ctx.budget.remaining_s() - self.ctx.budget.reserve_s < self.task.min_timeout:
            reasons.append("no job fits in the budget left before the report reserve")
        if self.store.stop_requested():
            reasons.append("stop requested")
        if reasons:
            self.log.info("loop.stop", reasons=reasons)
            self.ctx.progress(f"stopping: {'; '.join(reasons)}")
        return bool(reasons)

    # -- plan and data ------------------------------------------------------------------------

    def make_plan(self) -> Plan:
        stored = self.store.read("plan.json")
        if stored is not None:
            return Plan.model_validate(stored)
        self._set_stage("plan")
        plan = self.ctx.agent.plan(self.task, self.state.config.seeds)
        self._charge_agent()
        self.store.write("plan.json", plan)
        self.log.info("plan.written", hypotheses=[h.id for h in plan.hypotheses])
        self.ctx.progress(f"plan: {len(plan.hypotheses)} hypothesis(es), seeds {plan.seeds}")
        return plan

    @property
    def data_dir(self) -> Path:
        return self.store.root / "data"

    def dataset(self) -> DatasetSpec:
        """The run's dataset, resolved on the host (checked, fetched or replaced by FakeData)."""
        config = self.state.config
        spec = resolve_dataset(
            config.dataset,
            Path(config.data_root) if config.data_root else None,
            allow_download=config.allow_download,
            fallback_fakedata=config.fallback_fakedata,
            progress=self.ctx.progress,
        )
        if spec.fallback_from:
            self.log.warning("dataset.fallback", requested=config.dataset, reason=spec.fallback_from)
            self.ctx.progress(f"dataset unavailable ({spec.fallback_from}); using fakedata as asked")
        return spec

    def prepare_data(self) -> None:
        """Build the fixed splits once, in a container; keep the labels on the host."""
        if (self.data_dir / "private" / "labels.json").is_file():
            self.meta = json.loads((self.data_dir / "meta.json").read_text())
            return
        spec = self.dataset()
        job_files = self.task.code(with_prepare=True)
        job_files["config.json"] = json.dumps({"dataset": spec.kind, "raw_dir": RAW_DATA_MOUNT}).encode()
        policy = self.ctx.policies.train
        if spec.host_path is not None:
            policy = policy.with_overrides(data_mounts=[{"source": str(spec.host_path), "target": RAW_DATA_MOUNT}])
        record = self.execute(
            "prepare",
            "prepare",
            policy,
            self.task.timeouts.prepare,
            harness("run", "--job", self.task.entrypoints.prepare, "--config", "config.json"),
            job_files,
            keep_outputs=True,
        )
        if record.status != Status.ok:
            msg = f"data preparation failed ({record.result.reason}); see {self.store.attempt_dir(record.number)}"
            raise ControllerError(msg)
        source = self.store.attempt_dir(record.number) / "outputs" / "out"
        tmp = self.data_dir.with_name("data.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(source / "private")  # the only copy of the labels is the host's data/
        tmp.replace(self.data_dir)
        self.meta = json.loads((self.data_dir / "meta.json").read_text())

    def record_environment(self) -> None:
        """environment.json: image digest, the image's pip freeze, host, GPUs, seeds."""
        if (self.store.root / "environment.json").is_file():
            return
        from sandbox.gpus import detect_gpus

        freeze = self.ctx.sandbox.run(
            Job(command=["python3", "-m", "pip", "freeze", "--all"], run_id=self.state.run_id, attempt="env"),
            self.ctx.policies.guard,
        )
        prepare = self.index.get("prepare")
        self.store.write(
            "environment.json",
            {
                "host": socket.gethostname(),
                "platform": platform.platform(),
                "backend": self.ctx.sandbox.name,
                "image": prepare.result.image if prepare else None,
                "image_id": prepare.result.image_id if prepare else None,
                "pip_freeze": freeze.stdout.splitlines() if freeze.ok else [],
                "gpus": [g.__dict__ for g in detect_gpus()],
                "seeds": self.state.config.seeds,
                "deterministic": "torch.use_deterministic_algorithms(True, warn_only=True) and fixed seeds",
            },
        )

    def labels(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "private" / "labels.json").read_text())  # type: ignore[no-any-return]

    # -- one iteration ----------------------------------------------------------------------

    def iterate(self, hypothesis: Hypothesis) -> IterationOutcome:
        self.iteration += 1
        self.meter = IterationMeter(self.ctx.limits)
        self.state.iteration = self.iteration
        self.log = self.log.bind(iteration=self.iteration)
        self.ctx.progress(f"iteration {self.iteration}: {hypothesis.id} - {hypothesis.statement}")
        arms: list[Arm] = []
        notes: list[str] = []
        try:
            self._set_stage("code")
            modules = {slot: self.code_module(slot, hypothesis) for slot in sorted(hypothesis.modules)}
            arms = self.fit_to_budget(self.arms_for(hypothesis, modules))
            self._set_stage("run")
            pairs = [(arm, seed) for arm in arms for seed in self.state.config.seeds]
            if self.ctx.parallel > 1:
                with ThreadPoolExecutor(self.ctx.parallel, thread_name_prefix="job") as executor:
                    list(executor.map(lambda pair: self.train_and_score(*pair), pairs))
            else:
                for arm, seed in pairs:
                    self.train_and_score(arm, seed)
        except IterationLimitError as cut:
            self._limit(cut.limit, cut.detail)
            notes.append(f"iteration cut: {cut}")
        except AdmissionRefusedError as refused:
            self._limit("budget.admission", str(refused))
            notes.append(f"budget: {refused}")
        self._set_stage("analyze")
        return self.analyze(hypothesis, arms, notes)

    def code_module(self, slot: str, hypothesis: Hypothesis) -> ModuleCode:
        """Write, guard and repair one module; roll back when repairs run out."""
        agent = self.ctx.agent
        module = agent.write_module(self.task, slot, hypothesis)
        self._charge_agent()
        for round_ in range(self.ctx.limits.repairs_per_module + 1):
            record = self.guard(slot, module)
            if record.status == Status.ok:
                self.last_good[slot] = module
                return module
            if round_ == self.ctx.limits.repairs_per_module:
                break
            failure = self.guard_failure(record)
            self.ctx.progress(f"  guard failed for {slot} at {failure.stage}: {failure.exception_type}; repairing")
            module = agent.repair(self.task, slot, hypothesis, module, failure, self.last_good[slot])
            self._charge_agent()
            self.state.totals.repairs += 1
            if module.origin == "rollback":
                break
        self.state.totals.rollbacks += 1
        self.log.warning("module.rollback", slot=slot, to=self.last_good[slot].origin)
        self.ctx.progress(f"  {slot}: rolled back to the last module that passed the guard")
        return ModuleCode(slot=slot, code=self.last_good[slot].code, origin="rollback")

    def guard(self, slot: str, module: ModuleCode) -> AttemptRecord:
        spec = self.task.slots[slot]
        files = {**self.task.code(), spec.file: module.code.encode()}
        cmd = harness("guard", "--module", spec.file, "--entry", spec.entry, "--smoke", spec.smoke)
        return self.execute(
            f"guard/{slot}/{module.digest}",
            "guard",
            self.ctx.policies.guard,
            self.task.timeouts.guard,
            cmd,
            files,
            slot=slot,
            module=module,
        )

    @staticmethod
    def guard_failure(record: AttemptRecord) -> GuardFailure:
        result = record.result
        exc = next((e for e in reversed(result.events) if isinstance(e, ExceptionEvent)), None)
        stage = exc.stage if exc else ("timeout" if result.status == Status.timeout else "unknown")
        frames = "\n".join(
            f"{'>' if f.generated else ' '} {f.file}:{f.line} in {f.function}: {f.source}"
            for f in (exc.frames if exc else [])
        )
        return GuardFailure(
            stage=stage,
            exception_type=exc.type if exc else "",
            message=exc.message if exc else "",
            traceback=frames,
            stderr_tail=trim(result.stderr),
            status=str(result.status),
        )

    def arms_for(self, hypothesis: Hypothesis, modules: dict[str, ModuleCode]) -> list[Arm]:
        """Baseline, the novelty, and one ablation per novelty component (deduplicated)."""
        defaults = {k: v for k, v in self.task.defaults.items() if isinstance(v, int | float)}
        baseline_modules = {
            s: ModuleCode(slot=s, code=self.task.baseline_code(s), origin="baseline") for s in self.task.slots
        }
        baseline = Arm(name="baseline", modules=baseline_modules, hyper=defaults)
        novelty = Arm(
            name=f"novelty:{hypothesis.id}",
            modules={**baseline_modules, **modules},
            hyper={**defaults, **hypothesis.hyper},
        )
        arms = [baseline, novelty]
        for component in hypothesis.components():
            kind, _, name = component.partition(":")
            if kind == "module":
                ablated = Arm(
                    name=f"ablation:{hypothesis.id}-no-{name}",
                    modules={**novelty.modules, name: baseline_modules[name]},
                    hyper=novelty.hyper,
                )
            else:
                ablated = Arm(
                    name=f"ablation:{hypothesis.id}-no-{name}",
                    modules=novelty.modules,
                    hyper={**novelty.hyper, name: defaults[name]},
                )
            if ablated.key not in {a.key for a in arms}:
                arms.append(ablated)
        for arm in arms:
            self.arms.setdefault(arm.name, arm)
        return arms

    def estimated_job_s(self) -> float:
        """Typical seconds of one train+predict pair so far (the task's timeouts before any ran)."""
        pairs = [r.result.duration_s for r in self.index.values() if r.kind in {"train", "eval"}]
        if len(pairs) < 2:
            return self.task.timeouts.train / 4 + self.task.timeouts.predict / 4
        return 2 * statistics.median(pairs)

    def fit_to_budget(self, arms: list[Arm]) -> list[Arm]:
        """Check the iteration's matrix (arms x seeds) against the budget; shrink it if needed.

        Ablations go first, last one first: baseline and novelty are what the hypothesis needs,
        and the seeds are never cut (fewer than the plan's seeds would weaken every CI).
        """
        seeds = self.state.config.seeds
        per_job = self.estimated_job_s()
        available = self.ctx.budget.remaining_s() - self.ctx.budget.reserve_s

        def cost(candidate: list[Arm]) -> float:
            todo = [1 for arm in candidate for seed in seeds if f"train/{arm.key}/s{seed}" not in self.index]
            return len(todo) * per_job / max(self.ctx.parallel, 1)

        kept = list(arms)
        dropped: list[str] = []
        while cost(kept) > available and len(kept) > 2:
            dropped.append(kept.pop().name)
        if dropped:
            detail = (
                f"{len(arms)} arms x {len(seeds)} seeds need about {cost(arms):.0f}s but {available:.0f}s "
                f"remain; dropped {', '.join(dropped)}"
            )
            self.log.warning("matrix.shrunk", dropped=dropped, estimate_s=cost(arms), available_s=available)
            self._limit("matrix.shrunk", detail)
        return kept

    def train_and_score(self, arm: Arm, seed: int) -> AttemptRecord | None:
        """Train in one container, predict in another (strict, no labels), score on the host."""
        files = {**self.task.code(), **self._module_files(arm)}
        config = self._train_config(arm, seed)
        policy = self.ctx.policies.train
        public = self.data_dir / "public"
        if self.ctx.sandbox.name == "docker":  # read-only bind mount: large datasets are not copied per job
            policy = policy.with_overrides(data_mounts=[{"source": str(public), "target": PUBLIC_DATA_MOUNT}])
            config["data_dir"] = PUBLIC_DATA_MOUNT
        elif self.ctx.sandbox.name == "local":
            config["data_dir"] = str(public)
        else:
            for split in ("train", "val"):
                files[f"data/{split}.npz"] = (public / f"{split}.npz").read_bytes()
        if self.state.config.pretrained:
            files["pretrained.pt"] = Path(self.state.config.pretrained).read_bytes()
            config["pretrained"] = "pretrained.pt"
        files["config.json"] = json.dumps(config).encode()
        cmd = harness("run", "--job", self.task.entrypoints.train, "--config", "config.json")
        train = self.execute(
            f"train/{arm.key}/s{seed}",
            "train",
            policy,
            self.task.timeouts.train,
            cmd,
            files,
            arm=arm,
            seed=seed,
            keep_outputs=True,
        )
        if train.status != Status.ok:
            self.ctx.progress(f"  {arm.name} seed {seed}: training {train.status} ({train.result.reason})")
            return None
        weights = self.store.attempt_dir(train.number) / "outputs" / "out" / "model.pt"
        scored = self.predict_and_score(
            f"eval/{arm.key}/s{seed}", "eval", arm, {f"s{seed}": weights}, "val", train=train
        )
        if scored is not None and scored.host_score is not None:
            with self._lock:
                self.scores.setdefault(arm.key, {})[seed] = scored
                self._update_best()
            self.ctx.progress(
                f"  {arm.name} seed {seed}: host-scored val {self.task.metric.name} "
                f"{scored.host_score:.4f}{'  [SUSPECT]' if scored.suspect else ''}"
            )
        return scored

    def predict_and_score(
        self,
        key: str,
        kind: AttemptKind,
        arm: Arm,
        models: dict[str, Path],
        split: str,
        train: AttemptRecord | None = None,
        final: bool = False,
    ) -> AttemptRecord | None:
        files = {**self.task.code(), **self._module_files(arm)}
        for name, path in models.items():
            files[f"models/{name}.pt"] = path.read_bytes()
        files["inputs.npy"] = (self.data_dir / "eval" / f"{split}_inputs.npy").read_bytes()
        files["config.json"] = json.dumps({**self._train_config(arm, 0), "models": sorted(models)}).encode()
        cmd = harness("run", "--job", self.task.entrypoints.predict, "--config", "config.json")
        labels = self.labels()

        def score(result: AttemptResult, outputs: Path) -> dict[str, Any]:
            if result.status != Status.ok:
                return {}
            try:
                predictions = load_predictions(
                    outputs / "out" / "predictions.json",
                    models=sorted(models),
                    count=len(labels[split]),
                    classes=labels["classes"],
                )
            except InvalidPredictionsError as exc:
                return {"status": "error", "reason": f"invalid_predictions: {exc}"}
            per_model = {name: accuracy(p, labels[split]) for name, p in predictions.items()}
            mean = sum(per_model.values()) / len(per_model)
            update: dict[str, Any] = {"host_scores": per_model, "host_score": mean, "score_split": split}
            if train is not None:
                claim = _telemetry_claim(train.result, self.task.metric.name)
                update["telemetry_score"] = claim
                bounded = self.task.metric.name == "accuracy"
                if is_suspect(claim, mean, self.task.metric.higher_is_better, bounded=bounded):
                    update["suspect"] = True
                    update["suspect_reason"] = f"training telemetry claimed {claim:.4f} but the host scored {mean:.4f}"
            return update

        return self.execute(
            key,
            kind,
            self.ctx.policies.evaluate,
            self.task.timeouts.predict,
            cmd,
            files,
            arm=arm,
            keep_outputs=False,
            scorer=score,
            final=final,
        )

    # -- analysis -----------------------------------------------------------------------------

    def arm_stats(self, arm: Arm) -> ArmStats | None:
        values = [r.host_score for _, r in sorted(self.scores.get(arm.key, {}).items()) if r.host_score is not None]
        return summarize(arm.name, values) if values else None

    def analyze(self, hypothesis: Hypothesis, arms: list[Arm], notes: list[str]) -> IterationOutcome:
        stats = {arm.name: s for arm in arms if (s := self.arm_stats(arm)) is not None}
        baseline = stats.get("baseline")
        novelty = stats.get(f"novelty:{hypothesis.id}")
        supported = False
        if baseline and novelty:
            comparison = compare(novelty, baseline)
            supported = comparison.supported(hypothesis.success_threshold, self.task.metric.higher_is_better)
            self.log.info(
                "analysis",
                hypothesis=hypothesis.id,
                diff=comparison.diff,
                p_value=comparison.p_value,
                supported=supported,
            )
        outcome = IterationOutcome(
            iteration=self.iteration,
            hypothesis=hypothesis,
            supported=supported,
            arm_means={name: s.mean for name, s in stats.items()},
            baseline_mean=baseline.mean if baseline else None,
            notes=notes,
        )
        review = self.ctx.agent.review(self.task, outcome)
        self._charge_agent()
        outcome.notes.append(review.summary)
        self.ctx.progress(f"  analysis: {review.summary}")
        return outcome

    def finalize(self) -> None:
        """Aggregates, best arm (by validation mean over seeds), one test evaluation, report."""
        from controller.report import write_outputs

        self._set_stage("report")
        write_outputs(self)

    # -- the one way jobs run ---------------------------------------------------------------

    def execute(
        self,
        key: str,
        kind: AttemptKind,
        policy: Policy,
        timeout_s: float,
        command: list[str],
        files: dict[str, bytes],
        *,
        slot: str | None = None,
        module: ModuleCode | None = None,
        arm: Arm | None = None,
        seed: int | None = None,
        keep_outputs: bool = False,
        scorer: Callable[[AttemptResult, Path], dict[str, Any]] | None = None,
        final: bool = False,
    ) -> AttemptRecord:
        """Run a job in the sandbox, or return its recorded attempt if it already finished.

        Thread-safe: bookkeeping happens under the loop's lock, the job itself outside it.
        """
        with self._lock:
            done = self.index.get(key)
            if done is not None:
                return done
            if self._interrupted.is_set():
                raise InterruptedRunError
            if self.store.stop_requested() and not final:
                raise StopRequestedError
            budget = self.ctx.budget
            budget.check_cost()
            if self.meter is not None and not final:
                self.meter.check()
                self.meter.attempts += 1  # reserved now, so parallel jobs respect the limit
            clipped = (budget.admit_final if final else budget.admit)(timeout_s, self.task.min_timeout)
            self._next_number = max(self._next_number, self.store.next_attempt_number())
            number = self._next_number
            self._next_number += 1
        what = slot or (arm.name if arm else "")
        self.ctx.progress(f"  [{number:04d}] {kind} {what}{'' if seed is None else f' seed {seed}'} ...")
        for retry in range(INFRA_RETRIES + 1):
            # Only the machinery's failures are retried; a job's own failure is data.
            staging = self.store.staging_dir(number)
            outputs = staging / "outputs"
            job = Job(
                command=command, files=files, outputs_dir=outputs, run_id=self.state.run_id, attempt=f"{number:04d}"
            )
            with self._resources(policy.with_overrides(timeout=clipped)) as granted:
                result = self.ctx.sandbox.run(job, granted)
            if self._interrupted.is_set():
                shutil.rmtree(staging, ignore_errors=True)
                raise InterruptedRunError
            if result.status != Status.infra_error or retry == INFRA_RETRIES or self._deadline.is_set():
                break
            self.log.warning("attempt.infra_retry", attempt=number, retry=retry + 1, reason=result.reason)
            self.ctx.progress(f"  [{number:04d}] infrastructure failure ({result.reason}); retrying")
            time.sleep(INFRA_RETRY_PAUSE_S * (retry + 1))
        with self._lock:
            return self._record(
                key,
                kind,
                number,
                staging,
                outputs,
                result,
                policy,
                slot=slot,
                module=module,
                arm=arm,
                seed=seed,
                keep_outputs=keep_outputs,
                scorer=scorer,
                final=final,
            )

    def _resources(self, policy: Policy) -> Any:
        return self.ctx.resources.hold(policy) if self.ctx.resources is not None else nullcontext(policy)

    def _record(
        self,
        key: str,
        kind: AttemptKind,
        number: int,
        staging: Path,
        outputs: Path,
        result: AttemptResult,
        policy: Policy,
        *,
        slot: str | None,
        module: ModuleCode | None,
        arm: Arm | None,
        seed: int | None,
        keep_outputs: bool,
        scorer: Callable[[AttemptResult, Path], dict[str, Any]] | None,
        final: bool,
    ) -> AttemptRecord:
        extra = scorer(result, outputs) if scorer is not None else {}
        if not keep_outputs:
            shutil.rmtree(outputs, ignore_errors=True)
        deadline_note = "killed at the budget deadline" if self._deadline.is_set() and not result.ok else None
        record = AttemptRecord(
            number=number,
            key=key,
            kind=kind,
            iteration=self.iteration,
            slot=slot,
            module_digest=module.digest if module else None,
            arm=arm.name if arm else None,
            arm_key=arm.key if arm else None,
            seed=seed,
            status=str(extra.pop("status", result.status)),
            reason=extra.pop("reason", None) or deadline_note or result.reason,
            outputs="outputs" if keep_outputs else None,
            result=result,
            **extra,
        )
        code = {f"{s}.py": m.code for s, m in (arm.modules.items() if arm else [])}
        if module is not None:
            code[f"{module.slot}.py"] = module.code
        self.store.commit_attempt(staging, record, code)
        self.index[key] = record
        self._account(record, policy)
        self.log.info(
            "attempt.finished",
            attempt=number,
            kind=kind,
            key=key,
            status=record.status,
            duration_s=round(result.duration_s, 2),
            reason=record.reason,
        )
        if self._deadline.is_set() and not final:
            msg = "the wall-clock deadline was reached"
            raise BudgetExceededError(msg)
        return record

    # -- bookkeeping -----------------------------------------------------------------------------

    def _account(self, record: AttemptRecord, policy: Policy) -> None:
        totals = self.state.totals
        totals.attempts += 1
        totals.by_status[record.status] = totals.by_status.get(record.status, 0) + 1
        gpu_s = record.result.duration_s * policy.gpu_count
        totals.gpu_s += gpu_s
        gpu_usd = gpu_s / 3600 * self.state.config.gpu_usd_per_hour
        totals.gpu_cost_usd += gpu_usd
        totals.cost_usd += gpu_usd
        self.ctx.budget.charge(gpu_usd)
        if self.meter is not None:
            self.meter.gpu_s += gpu_s
            self.meter.cost_usd += gpu_usd
        self._save()

    def _charge_agent(self) -> None:
        """Move the agent's LLM spending since the last call into the budget and meter."""
        usage = getattr(self.ctx.agent, "usage", None)
        if usage is None:
            return
        totals = self.state.totals
        delta_usd = usage.cost_usd - totals.llm_cost_usd
        delta_tokens = usage.prompt_tokens + usage.completion_tokens - totals.tokens
        totals.llm_cost_usd = usage.cost_usd
        totals.tokens += delta_tokens
        totals.llm_calls = usage.calls
        totals.cost_usd += delta_usd
        self.ctx.budget.charge(delta_usd)
        if self.meter is not None:
            self.meter.cost_usd += delta_usd
            self.meter.tokens += delta_tokens

    def _update_best(self) -> None:
        best: BestSoFar | None = None
        higher = self.task.metric.higher_is_better
        for arm in self.arms.values():
            stats = self.arm_stats(arm)
            if stats is None:
                continue
            better = best is None or (stats.mean > best.mean if higher else stats.mean < best.mean)
            if better:
                best = BestSoFar(arm=arm.name, mean=stats.mean, n=stats.n)
        self.state.best = best

    def _limit(self, limit: str, detail: str) -> None:
        self.state.limits_hit.append(LimitHit(limit=limit, iteration=self.iteration, detail=detail))
        self.log.warning("limit.hit", limit=limit, detail=detail)
        self.ctx.progress(f"  limit hit: {limit}: {detail}")
        self._save()

    def _set_stage(self, stage: str) -> None:
        self.state.stage = stage
        self._save()

    def _save(self) -> None:
        self.state.totals.wall_s = self.ctx.budget.used_s()
        self.store.save_state(self.state)

    def _module_files(self, arm: Arm) -> dict[str, bytes]:
        return {self.task.slots[s].file: m.code.encode() for s, m in arm.modules.items()}

    def _smoke_spec(self) -> bytes:
        shape = self.meta.get("input_shape", list(self.task.input_shape))
        return json.dumps(
            {"input_shape": shape, "num_classes": self.meta.get("num_classes", self.task.num_classes)}
        ).encode()

    def _train_config(self, arm: Arm, seed: int) -> dict[str, Any]:
        return {
            **self.task.defaults,
            **arm.hyper,
            "seed": seed,
            "num_classes": self.meta.get("num_classes", self.task.num_classes),
            "input_shape": self.meta.get("input_shape", list(self.task.input_shape)),
            "mean": self.meta.get("mean"),
            "std": self.meta.get("std"),
            "arch": self.state.config.arch,
            "threads": max(1, int(self.ctx.policies.train.cpus)),
        }


def _telemetry_claim(result: AttemptResult, metric: str) -> float | None:
    """The best value the job itself reported for anything named like the metric."""
    values = [e.value for e in result.events if isinstance(e, MetricEvent) and metric in e.name.lower()]
    return max(values) if values else None
