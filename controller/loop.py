"""The research loop: plan -> code -> guard -> repair -> run -> analyze -> refine -> report.

Each step is a short method that reads like aide's Agent.step; jobs, data and bookkeeping
live in controller/execution.py (AttemptRunner), which this class builds on.
"""

from __future__ import annotations

import itertools
import json
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from controller.agents.base import GuardFailure, IterationOutcome
from controller.budget import (
    AdmissionRefusedError,
    IterationLimitError,
    IterationMeter,
)
from controller.errors import BudgetExceededError
from controller.execution import (
    PUBLIC_DATA_MOUNT,
    AttemptRunner,
    InterruptedRunError,
    LoopContext,
    StagePolicies,
    StopRequestedError,
    _telemetry_claim,
    harness,
    trim,
)
from controller.plan import DIMENSION_VALUES, Arm, Hyper, Hypothesis, Matrix, ModuleCode, Plan, Value
from controller.registry import AttemptKind, AttemptRecord, BestSoFar, RunState
from controller.scoring import InvalidPredictionsError, accuracy, is_suspect, load_predictions
from controller.stats import ArmStats, compare, summarize
from sandbox.events import ExceptionEvent
from sandbox.results import AttemptResult, Status

__all__ = ["InterruptedRunError", "LoopContext", "ResearchLoop", "StagePolicies", "trim"]


class ResearchLoop(AttemptRunner):
    """Runs one research run to completion, interruption or budget."""

    def __init__(self, ctx: LoopContext) -> None:
        super().__init__(ctx)
        self.last_good: dict[str, ModuleCode] = {
            slot: ModuleCode(slot=slot, code=ctx.task.baseline_code(slot), origin="baseline") for slot in ctx.task.slots
        }
        self.history: list[IterationOutcome] = []
        self.plan: Plan | None = None

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
            plan = self.plan = self.make_plan()
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
        if self.state.config.matrix:
            plan = plan.model_copy(update={"matrix": Matrix.model_validate(self.state.config.matrix)})
        self._charge_agent()
        self.store.write("plan.json", plan)
        self.log.info("plan.written", hypotheses=[h.id for h in plan.hypotheses])
        self.ctx.progress(f"plan: {len(plan.hypotheses)} hypothesis(es), seeds {plan.seeds}")
        return plan

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
        """The iteration's matrix: baseline, novelty (after an optional sweep), one ablation per
        novelty component, systematic-dimension arms, each crossed with the plan's variants."""
        matrix = self.plan.matrix if self.plan is not None else Matrix()
        defaults: Hyper = {k: v for k, v in self.task.defaults.items() if isinstance(v, int | float | str)}
        baseline_modules = {
            s: ModuleCode(slot=s, code=self.task.baseline_code(s), origin="baseline") for s in self.task.slots
        }
        baseline = Arm(name="baseline", modules=baseline_modules, hyper=defaults)
        novelty_modules = {**baseline_modules, **modules}
        novelty_hyper = {**defaults, **hypothesis.hyper}
        if matrix.sweep:
            novelty_hyper = self.sweep(hypothesis, novelty_modules, novelty_hyper, matrix.sweep)
        novelty = Arm(name=f"novelty:{hypothesis.id}", modules=novelty_modules, hyper=novelty_hyper)
        core = [baseline, novelty]
        for component in hypothesis.components():
            kind, _, name = component.partition(":")
            ablated_modules = {**novelty.modules, name: baseline_modules[name]} if kind == "module" else novelty.modules
            ablated_hyper = novelty.hyper if kind == "module" else {**novelty.hyper, name: defaults[name]}
            core.append(Arm(name=f"ablation:{hypothesis.id}-no-{name}", modules=ablated_modules, hyper=ablated_hyper))
        for dimension in matrix.ablate:
            core += self.dimension_arms(hypothesis, novelty, dimension)
        crossed = list(core)
        keys = sorted(matrix.variants)
        for combo in itertools.product(*(matrix.variants[k] for k in keys)):
            if all(v == matrix.variants[k][0] for k, v in zip(keys, combo, strict=True)):
                continue  # the reference combination is the plain arm itself
            tag = ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
            crossed += [
                Arm(
                    name=f"{arm.name}@{tag}",
                    modules=arm.modules,
                    hyper={**arm.hyper, **dict(zip(keys, combo, strict=True))},
                )
                for arm in core
            ]
        arms: list[Arm] = []
        for arm in crossed:
            if arm.key not in {a.key for a in arms}:
                arms.append(arm)
                self.arms.setdefault(arm.name, arm)
        return arms

    def dimension_arms(self, hypothesis: Hypothesis, novelty: Arm, dimension: str) -> list[Arm]:
        """Arms varying one systematic dimension of the novelty: a hyperparameter family, or
        a slot's suite of alternative modules (each guarded like any module)."""
        if dimension in DIMENSION_VALUES:
            return [
                Arm(
                    name=f"ablation:{hypothesis.id}-{dimension}={value}",
                    modules=novelty.modules,
                    hyper={**novelty.hyper, dimension: value},
                )
                for value in DIMENSION_VALUES[dimension][1:]
            ]
        arms = []
        for name, code in self.task.suite_code(dimension).items():
            module = ModuleCode(slot=dimension, code=code, origin=f"suite:{name}")
            if self.guard(dimension, module).status != Status.ok:
                self.ctx.progress(f"  suite member {dimension}={name} failed the guard; skipped")
                continue
            arms.append(
                Arm(
                    name=f"ablation:{hypothesis.id}-{dimension}={name}",
                    modules={**novelty.modules, dimension: module},
                    hyper=novelty.hyper,
                )
            )
        return arms

    def sweep(
        self, hypothesis: Hypothesis, modules: dict[str, ModuleCode], hyper: Hyper, grid: dict[str, list[Value]]
    ) -> Hyper:
        """Try each grid point on the first seed; keep the best by host-scored validation."""
        keys = sorted(grid)
        seed = self.state.config.seeds[0]
        scored: list[tuple[float, Hyper]] = []
        for combo in itertools.product(*(grid[k] for k in keys)):
            point = {**hyper, **dict(zip(keys, combo, strict=True))}
            tag = ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
            arm = Arm(name=f"sweep:{hypothesis.id}@{tag}", modules=modules, hyper=point)
            self.arms.setdefault(arm.name, arm)
            record = self.train_and_score(arm, seed)
            if record is not None and record.host_score is not None:
                value = record.host_score if self.task.metric.higher_is_better else -record.host_score
                scored.append((value, point))
        if not scored:
            return hyper
        best = max(scored, key=lambda item: item[0])[1]
        chosen = {k: best[k] for k in keys}
        self.log.info("sweep.selected", hypothesis=hypothesis.id, chosen=chosen, tried=len(scored))
        self.ctx.progress(f"  sweep selected {chosen} for {hypothesis.id} (on validation, seed {seed})")
        return best

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
